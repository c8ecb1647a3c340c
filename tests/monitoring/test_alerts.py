"""The alerting rules: the kustomize component's PrometheusRule is the Helm chart's rendering with
default values; promtool checks the rules and runs their unit tests (rules.test.yaml beside this
file); every alert has a summary, a description and a runbook_url whose section exists in
docs/runbook.md and has a promtool test that fires it; the label values the rules match on are
ones the binary exports.

promtool comes from Debian's `prometheus` package (no PyPI or npm package ships it);
scripts/test.sh installs it when it runs as root. PROMTOOL=/path/to/promtool names another.
Missing, these tests fail: they never skip.

Run from the repository root:  python -m pytest -q tests/monitoring
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "manifests"))

from manifest_checks import KUSTOMIZE_BASE, REPO_ROOT, kustomize  # noqa: E402
from test_helm import render  # noqa: E402

COMPONENT = REPO_ROOT / "deploy" / "components" / "alerts" / "prometheusrule.yaml"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"
UNIT_TESTS = sorted(HERE.glob("*.test.yaml"))
# The alerts about the refresher, left out of the chart's rendering with refresher: false.
REFRESHER_ALERTS = {
    "EcrTokenWebhookTokenExpired",
    "EcrTokenWebhookTokenExpiringSoon",
    "EcrTokenWebhookSecretsWithoutToken",
    "EcrTokenWebhookRefresherStalled",
    "EcrTokenWebhookNoLeader",
}


def promtool() -> str:
    explicit = os.environ.get("PROMTOOL")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            pytest.fail(f"PROMTOOL={explicit} is not an executable file")
        return explicit
    found = shutil.which("promtool")
    if not found:
        pytest.fail(
            "promtool is not on PATH: the alert tests run `promtool test rules`. Install Debian's "
            "prometheus package (apt-get install prometheus; scripts/test.sh does this when run as "
            "root) or set PROMTOOL=/path/to/promtool",
            pytrace=False,
        )
    return found


def run_promtool(*args: str, cwd: Path) -> str:
    proc = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed ({proc.returncode}):\n{out}"
    return out


def component_rule() -> dict:
    return yaml.safe_load(COMPONENT.read_text())


def helm_rule(values: dict | None = None) -> dict:
    objs = render({"prometheusRule": {"enabled": True}, **(values or {})})
    [rule] = [o for o in objs if o["kind"] == "PrometheusRule"]
    return rule


def alerts(rule: dict) -> list[dict]:
    return [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]


def write_rules(rule: dict, directory: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


# --- one set of rules ----------------------------------------------------------------------


def test_the_component_is_the_chart_with_default_values():
    component, chart = component_rule(), helm_rule()
    assert component["spec"] == chart["spec"], (
        "deploy/components/alerts/prometheusrule.yaml differs from the chart's rendering with "
        "default values: change the template, then regenerate the component's spec from it"
    )
    assert component["metadata"]["name"] == chart["metadata"]["name"] == "ecr-token-webhook"
    assert component["metadata"]["namespace"] == chart["metadata"]["namespace"] == "ecr-token-webhook"


def test_chart_values_set_the_thresholds_and_labels():
    rule = helm_rule(
        {
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "prometheus"},
                "alertLabels": {"team": "platform", "severity": "page"},
                "runbookUrl": "https://docs.example.com/ecr-token-webhook/runbook",
                "tokenExpirySeconds": 7200,
                "refresherStallSeconds": 900,
                "certificateExpiryDays": 21,
            }
        }
    )
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    by_name = {a["alert"]: a for a in alerts(rule)}
    assert by_name["EcrTokenWebhookTokenExpiringSoon"]["expr"].endswith("< 7200")
    assert "less than 2h away" in by_name["EcrTokenWebhookTokenExpiringSoon"]["annotations"]["description"]
    assert by_name["EcrTokenWebhookRefresherStalled"]["expr"].endswith("> 900")
    assert "more than 15m." in by_name["EcrTokenWebhookRefresherStalled"]["annotations"]["description"]
    assert by_name["EcrTokenWebhookCertificateExpiringSoon"]["expr"].endswith(f"< {21 * 86400}")
    for a in by_name.values():
        # alertLabels are added to every alert and may override the severity.
        assert a["labels"] == {"severity": "page", "team": "platform"}
        assert a["annotations"]["runbook_url"] == (
            "https://docs.example.com/ecr-token-webhook/runbook#" + a["alert"].lower()
        )


def test_without_the_refresher_its_alerts_are_left_out():
    names = {a["alert"] for a in alerts(helm_rule({"refresher": False}))}
    all_names = {a["alert"] for a in alerts(helm_rule())}
    assert REFRESHER_ALERTS < all_names
    assert names == all_names - REFRESHER_ALERTS


def test_disabled_by_default():
    assert not [o for o in render() if o["kind"] == "PrometheusRule"]


def test_kustomize_component_adds_the_rule_to_the_base(tmp_path):
    from test_dashboard import render_components

    base = kustomize(KUSTOMIZE_BASE)
    objs = render_components(tmp_path, COMPONENT.parent)
    added = [o for o in objs if o not in base]
    assert [(o["kind"], o["metadata"]["name"]) for o in added] == [("PrometheusRule", "ecr-token-webhook")]
    assert added[0]["metadata"]["namespace"] == "ecr-token-webhook"
    assert added[0]["metadata"]["labels"]["app.kubernetes.io/name"] == "ecr-token-webhook"
    assert added[0]["spec"] == component_rule()["spec"]
    assert len(objs) == len(base) + 1


# --- promtool ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["component", "chart-custom", "chart-without-refresher"],
)
def test_promtool_checks_the_rules(tmp_path, case):
    rule = {
        "component": component_rule,
        "chart-custom": lambda: helm_rule(
            {"prometheusRule": {"enabled": True, "tokenExpirySeconds": 5400, "certificateExpiryDays": 30,
                                "alertLabels": {"team": "platform"}}}
        ),
        "chart-without-refresher": lambda: helm_rule({"refresher": False}),
    }[case]()
    out = run_promtool("check", "rules", str(write_rules(rule, tmp_path)), cwd=tmp_path)
    assert f"SUCCESS: {len(alerts(rule))} rules found" in out, out


def test_promtool_unit_tests_pass(tmp_path):
    assert UNIT_TESTS, f"no *.test.yaml in {HERE}"
    write_rules(component_rule(), tmp_path)
    for t in UNIT_TESTS:
        shutil.copy(t, tmp_path / t.name)
    out = run_promtool("test", "rules", *(t.name for t in UNIT_TESTS), cwd=tmp_path)
    assert "SUCCESS" in out and "FAILED" not in out, out


def test_promtool_unit_tests_can_fail(tmp_path):
    """The unit tests really compare: a test expecting a wrong annotation fails."""
    write_rules(component_rule(), tmp_path)
    doc = yaml.safe_load(UNIT_TESTS[0].read_text())
    case = next(t for t in doc["tests"] for a in t["alert_rule_test"] if a["exp_alerts"])
    expecting = next(a for a in case["alert_rule_test"] if a["exp_alerts"])
    expecting["exp_alerts"][0]["exp_annotations"]["summary"] += " (wrong)"
    doc["tests"] = [case]
    (tmp_path / "wrong.test.yaml").write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [promtool(), "test", "rules", "wrong.test.yaml"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_that_does_not():
    fired, quiet = set(), set()
    for t in UNIT_TESTS:
        for case in yaml.safe_load(t.read_text())["tests"]:
            for a in case.get("alert_rule_test", []):
                (fired if a["exp_alerts"] else quiet).add(a["alertname"])
    names = {a["alert"] for a in alerts(component_rule())}
    assert names - fired == set(), "alerts no promtool test fires"
    assert names - quiet == set(), "alerts no promtool test shows quiet"
    assert (fired | quiet) - names == set(), "promtool tests for alerts that do not exist"


def promtool_seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration))


# The alerts on counters (increase()), whose first failure can be a series' first sample.
COUNTER_ALERTS = {
    "EcrTokenWebhookEcrRequestsFailing",
    "EcrTokenWebhookFailingOpen",
    "EcrTokenWebhookDenyingWrites",
    "EcrTokenWebhookCallersRefused",
}


def test_every_alert_fires_on_the_first_failure_and_resolves_after_recovery():
    """Each alert (the runbook's sections) has a promtool case in which it fires and, later in
    the same case, is quiet again; each counter alert has a firing case whose counter appears
    with its first sample at 1 or more (no 0 before it: a replica that failed before its first
    scrape, or a region's first call failing)."""
    resolved, born_failing = set(), set()
    for t in UNIT_TESTS:
        for case in yaml.safe_load(t.read_text())["tests"]:
            by_alert: dict[str, list[tuple[int, bool]]] = {}
            for a in case.get("alert_rule_test", []):
                by_alert.setdefault(a["alertname"], []).append((promtool_seconds(a["eval_time"]), bool(a["exp_alerts"])))
            for name, evals in by_alert.items():
                evals.sort()
                fired_at = [when for when, fired in evals if fired]
                if fired_at and any(when > fired_at[0] and not fired for when, fired in evals):
                    resolved.add(name)
            starts_late = [
                s for s in case["input_series"]
                if "_total{" in s["series"] and s["values"].startswith("_")
                and re.match(r"[1-9]", s["values"].split()[1]) and 'outcome="success"' not in s["series"]
            ]
            if starts_late:
                born_failing |= {n for n, evals in by_alert.items() if any(f for _, f in evals)}
    names = {a["alert"] for a in alerts(component_rule())}
    assert names - resolved == set(), "alerts no promtool case shows resolving after it fired"
    assert COUNTER_ALERTS <= names
    assert COUNTER_ALERTS - born_failing == set(), "counter alerts no case fires from a series born at 1"


def test_unit_test_series_are_shaped_like_the_real_metrics():
    """Every series the unit tests feed carries the labels the webhook exports with it (and the
    scrape's own), no others: a renamed label fails here, not in production."""
    exported_labels = {
        "ecr_token_webhook_secrets": {"state"},
        "ecr_token_webhook_secrets_earliest_expiry_timestamp_seconds": set(),
        "ecr_token_webhook_refresh_last_pass_timestamp_seconds": set(),
        "ecr_token_webhook_leader": set(),
        "ecr_token_webhook_ecr_requests_total": {"region", "outcome"},
        "ecr_token_webhook_admission_requests_total": {"operation", "kind", "outcome"},
        "ecr_token_webhook_tls_certificate_expiry_timestamp_seconds": set(),
        "ecr_token_webhook_caller_refusals_total": {"reason"},
    }
    scrape_labels = {"job", "namespace", "pod", "instance"}
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "src").rglob("*.rs"))
    for t in UNIT_TESTS:
        for case in yaml.safe_load(t.read_text())["tests"]:
            for s in case["input_series"]:
                m = re.fullmatch(r"([a-z_]+)\{(.*)\}", s["series"])
                assert m, s["series"]
                name, labels = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
                assert name in exported_labels, f"{name} is not one of the metrics the rules use"
                assert set(labels) == exported_labels[name] | scrape_labels, s["series"]
                for key in exported_labels[name] - {"region", "operation"}:
                    assert f'"{labels[key]}"' in source, f"{key}={labels[key]} is no value the binary exports"


# --- annotations and runbook ---------------------------------------------------------------


def github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_to_its_runbook_section():
    sections = [github_anchor(h) for h in re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)]
    names = [a["alert"] for a in alerts(component_rule())]
    for a in alerts(component_rule()):
        ann = a["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, a["alert"]
        assert ann["summary"] and len(ann["description"]) > len(ann["summary"]), a["alert"]
        base, _, anchor = ann["runbook_url"].partition("#")
        assert base.endswith("/docs/runbook.md"), ann["runbook_url"]
        assert anchor == a["alert"].lower() and anchor in sections, f"no section {anchor} in {RUNBOOK}"
        assert a["labels"]["severity"] in {"critical", "warning"}, a["alert"]
    assert sorted(sections) == sorted(n.lower() for n in names), "runbook sections without an alert"


def test_runbook_sections_say_what_to_check_in_order():
    text = RUNBOOK.read_text()
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        name = part.splitlines()[0]
        assert "**Means**" in part and "**Impact**" in part, name
        assert "Check, in order:" in part and re.search(r"^1\. ", part, re.M) and re.search(r"^2\. ", part, re.M), name


def test_label_values_the_rules_match_exist_in_the_binary():
    """`label="value"` matchers name values the binary exports (a renamed state or outcome would
    silently never match)."""
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "src").rglob("*.rs"))
    for a in alerts(component_rule()):
        for label, value in re.findall(r'(\w+)!?=~?"([^"]*)"', a["expr"]):
            for v in value.split("|"):
                assert f'"{v}"' in source, f"{a['alert']}: {label}={v!r} is no value the binary exports"
