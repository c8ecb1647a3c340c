"""The Grafana dashboard: one JSON file (the chart's dashboards/ and deploy/components/dashboard
hold the same bytes) that parses, takes its data source from a dashboard variable, has the
panels docs/configuration.md promises, and whose queries are valid PromQL (promtool parses each as a
recording rule) over metrics the webhook exports; and the ConfigMap that ships it renders from
the chart and from the kustomize component with the sidecar's label.

That each metric exists in the binary's real /metrics output is tested in Rust
(tests/it/monitoring.rs) and against a real Prometheus in tests/kube/test_prometheus.py.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "manifests"))

from manifest_checks import KUSTOMIZE_BASE, REPO_ROOT, kustomize, one  # noqa: E402
from test_alerts import run_promtool  # noqa: E402
from test_helm import render  # noqa: E402

CHART_COPY = REPO_ROOT / "deploy" / "helm" / "ecr-token-webhook" / "dashboards" / "ecr-token-webhook.json"
COMPONENT = REPO_ROOT / "deploy" / "components" / "dashboard"
COMPONENT_COPY = COMPONENT / "ecr-token-webhook.json"
SIDECAR_LABEL = ("grafana_dashboard", "1")


def dashboard() -> dict:
    return json.loads(CHART_COPY.read_text())


def panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        if p["type"] == "row":
            out += p.get("panels", [])
        else:
            out.append(p)
    return out


def queries(d: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(d) for t in p["targets"]]


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, as Prometheus receives it."""
    return expr.replace("$namespace", ".*").replace("$__rate_interval", "2m")


def test_one_file_in_both_installs():
    assert CHART_COPY.read_bytes() == COMPONENT_COPY.read_bytes(), (
        "the chart's dashboards/ecr-token-webhook.json and deploy/components/dashboard's differ: "
        "copy one over the other"
    )


def test_parses_and_takes_its_data_source_from_a_variable():
    d = dashboard()
    assert d["uid"] == "ecr-token-webhook" and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ns = variables["namespace"]
    assert ns["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert ns["includeAll"] and ns["allValue"] == ".*"
    ids = [p["id"] for p in d["panels"]] + [p["id"] for p in panels(d) if p not in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels(d):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["description"], p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]
            assert 'namespace=~"$namespace"' in t["expr"], (p["title"], t["expr"])


def test_has_the_promised_panels():
    by_title = {p["title"]: p for p in panels(dashboard())}
    for title, metric in {
        "Secrets by state": "ecr_token_webhook_secrets{",
        "Least time to expiry": "ecr_token_webhook_secrets_earliest_expiry_timestamp_seconds",
        "Admissions by outcome": "ecr_token_webhook_admission_requests_total",
        "Admission latency": "ecr_token_webhook_admission_duration_seconds_bucket",
        "ECR calls by outcome": "ecr_token_webhook_ecr_requests_total",
        "Touches by outcome": "ecr_token_webhook_refresh_touches_total",
    }.items():
        assert title in by_title, f"no panel {title!r}"
        assert any(metric in t["expr"] for t in by_title[title]["targets"]), title
    latency = [t["expr"] for t in by_title["Admission latency"]["targets"]]
    assert all(e.startswith("histogram_quantile(") for e in latency) and len(latency) == 3
    assert "by (state)" in by_title["Secrets by state"]["targets"][0]["expr"]
    assert "by (outcome)" in by_title["Admissions by outcome"]["targets"][0]["expr"]


def test_queries_are_promql_over_the_exported_metrics(tmp_path):
    """promtool parses every query (as a recording rule); each names only metrics in the
    metrics table of docs/configuration.md (the Rust test checks that table against the binary's output)."""
    rules = [{"record": f"dashboard:query_{i}", "expr": as_promql(e)} for i, (_, e) in enumerate(queries(dashboard()))]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in out, out

    page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `(ecr_token_webhook_[a-z_]+)` \|", page, re.M))
    assert documented, "no metrics table in docs/configuration.md"
    for title, expr in queries(dashboard()):
        for name in re.findall(r"ecr_token_webhook_[a-z_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in documented or base in documented, f"{title}: {name} is not an exported metric"


# --- the ConfigMap -------------------------------------------------------------------------


def test_chart_ships_it_when_enabled():
    assert not [o for o in render() if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]]
    objs = render({"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Platform"}}})
    cm = one(objs, "ConfigMap", "ecr-token-webhook-dashboard")
    assert cm["metadata"]["namespace"] == "ecr-token-webhook"
    assert cm["metadata"]["labels"][SIDECAR_LABEL[0]] == SIDECAR_LABEL[1]
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Platform"}
    assert json.loads(cm["data"]["ecr-token-webhook.json"]) == dashboard()

    moved = render({"grafanaDashboard": {"enabled": True, "namespace": "monitoring", "labels": {"dashboards": "platform"}}})
    cm = one(moved, "ConfigMap", "ecr-token-webhook-dashboard")
    assert cm["metadata"]["namespace"] == "monitoring"
    # Helm merges maps with the defaults: the sidecar label stays unless set to null.
    assert cm["metadata"]["labels"]["dashboards"] == "platform"
    assert cm["metadata"]["labels"][SIDECAR_LABEL[0]] == SIDECAR_LABEL[1]
    cm = one(render({"grafanaDashboard": {"enabled": True, "labels": {"grafana_dashboard": None, "dashboards": "x"}}}), "ConfigMap", "ecr-token-webhook-dashboard")
    assert SIDECAR_LABEL[0] not in cm["metadata"]["labels"]


def render_components(workdir: Path, *components: Path) -> list[dict]:
    """The base with components, as a user's overlay lists them (kustomize wants relative paths)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(KUSTOMIZE_BASE, workdir)],
                "components": [os.path.relpath(c, workdir) for c in components],
            }
        )
    )
    return kustomize(workdir)


def test_kustomize_component_ships_it(tmp_path):
    base = kustomize(KUSTOMIZE_BASE)
    objs = render_components(tmp_path, COMPONENT)
    added = [o for o in objs if o not in base]
    assert [(o["kind"], o["metadata"]["name"]) for o in added] == [("ConfigMap", "ecr-token-webhook-dashboard")]
    [cm] = added
    assert cm["metadata"]["namespace"] == "ecr-token-webhook"
    assert cm["metadata"]["labels"][SIDECAR_LABEL[0]] == SIDECAR_LABEL[1]
    assert json.loads(cm["data"]["ecr-token-webhook.json"]) == dashboard()
    assert len(objs) == len(base) + 1
