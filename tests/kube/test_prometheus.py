"""A real Prometheus scrapes the webhook binary that runs against the real API server, with the
shipped alerting rules loaded: the state metric, queried through Prometheus's HTTP API, counts
the opted-in secrets the way `ecr-token-webhook status` would; the earliest expiry is the one
set on a secret; every metric the rules and the dashboard use is scraped; and the rules
evaluate without errors against the real series, the ones that should be pending are; and the
counter alerts fire on the first failure (one write that fails open, a region's first ECR call
failing) and the ECR alert resolves at the region's first success.

Prometheus is Debian's `prometheus` package (PROMETHEUS=/path names another binary);
scripts/test.sh installs it as root. Missing, these tests fail: they never skip. It listens on
127.0.0.1 (a free port) with a throwaway storage directory and scrapes every second.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.parse
from typing import Iterator

import pytest
import yaml

from cluster import Cluster, Proc, clean_env, free_port, until
from manifest_checks import REPO_ROOT
from tier import (
    EXPIRES_AT,
    ERROR,
    INJECT_LABEL,
    NAMESPACE,
    REGISTRIES,
    TOUCHED_AT,
    Webhook,
    argocd_secret,
    annotations,
    no_proxy,
)

ALERTS = REPO_ROOT / "deploy" / "components" / "alerts" / "prometheusrule.yaml"
DASHBOARD = REPO_ROOT / "deploy" / "components" / "dashboard" / "ecr-token-webhook.json"
NS = "tier-prometheus"
VALID = 3  # opted-in secrets the webhook writes in NS
# Opted-in secrets in the webhook's own namespace, where the API server never calls the webhook
# (its namespaceSelector), so they stay as created: one per problem state.
EXPIRED_AT = (int(time.time()) // 60 - 120) * 60  # two hours ago, whole minutes
BROKEN = {
    "prom-no-token": {},
    "prom-expired": {EXPIRES_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EXPIRED_AT))},
    "prom-error": {
        ERROR: "no ECR token: a test",
        EXPIRES_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7200)),
    },
}


def prometheus_binary() -> str:
    explicit = os.environ.get("PROMETHEUS")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            pytest.fail(f"PROMETHEUS={explicit} is not an executable file", pytrace=False)
        return explicit
    found = shutil.which("prometheus")
    if not found:
        pytest.fail(
            "prometheus is not on PATH: this test scrapes the webhook with a real Prometheus server. "
            "Install Debian's prometheus package (apt-get install prometheus; scripts/test.sh does "
            "this when run as root) or set PROMETHEUS=/path/to/prometheus",
            pytrace=False,
        )
    return found


class Prometheus:
    def __init__(self, proc: Proc, url: str):
        self.proc = proc
        self.url = url

    def get(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with no_proxy().open(f"{self.url}{path}{query}", timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        data = self.get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        return data["result"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def explain(self) -> str:
        return f"--- prometheus (last 30 lines of {self.proc.log})\n{self.proc.tail(30)}"


@pytest.fixture(scope="module")
def prometheus(webhook: Webhook, tmp_path_factory) -> Iterator[Prometheus]:
    binary = prometheus_binary()
    work = tmp_path_factory.mktemp("prometheus")
    rules = work / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": yaml.safe_load(ALERTS.read_text())["spec"]["groups"]}))
    config = work / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {
                        "job_name": "ecr-token-webhook",
                        "static_configs": [{"targets": [webhook.metrics_url.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    proc = Proc.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        work / "prometheus.log",
        clean_env(),
        work,
    )
    prom = Prometheus(proc, f"http://127.0.0.1:{port}")
    try:
        def ready() -> bool:
            proc.check_alive()
            with no_proxy().open(f"{prom.url}/-/ready", timeout=2) as r:
                return r.status == 200

        until("Prometheus ready", ready, timeout=60)
        until("the webhook scraped", lambda: prom.value('up{job="ecr-token-webhook"}') == 1, timeout=30)
        yield prom
    except TimeoutError as e:
        pytest.fail(f"{e}\n{prom.explain()}", pytrace=False)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def secrets(cluster: Cluster, webhook: Webhook) -> Iterator[None]:
    """VALID secrets with tokens in NS, and the BROKEN ones in the webhook's namespace."""
    cluster.ensure_namespace(NS)
    for i in range(VALID):
        cluster.kubectl("create", "-f", "-", input=json.dumps(argocd_secret(f"repo-{i}", NS)))
    for name, annotations in BROKEN.items():
        secret = argocd_secret(name, NAMESPACE)
        secret["metadata"]["annotations"] = annotations
        cluster.kubectl("create", "-f", "-", input=json.dumps(secret))
    try:
        yield
    finally:
        for name in BROKEN:
            cluster.kubectl("delete", "secret", name, "-n", NAMESPACE, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def opted_in_everywhere(cluster: Cluster) -> tuple[int, int]:
    """Opted-in secrets in the cluster, and how many of them the webhook refused by policy (its
    refusal is in their error annotation, which counts them as outside-policy)."""
    items = cluster.get_json("secrets", "-A", "-l", f"{INJECT_LABEL}=true")["items"]
    refused = [
        s for s in items
        if (s["metadata"].get("annotations") or {}).get(ERROR, "").startswith("refused by policy")
    ]
    return len(items), len(refused)


def test_state_metric_through_prometheus(cluster: Cluster, prometheus: Prometheus, secrets: None):
    # Every other opted-in secret in the cluster (other tests') holds a valid token: fresh or
    # due, which alternate quickly with the tier's 45-second tokens.
    total, refused = opted_in_everywhere(cluster)
    assert total >= VALID + len(BROKEN)
    want = {
        "expired": 1,
        "no-token": 1,
        "error": 1,
        "outside-policy": refused,
        "valid": total - len(BROKEN) - refused,
    }

    def states() -> dict | None:
        got = {r["metric"]["state"]: int(float(r["value"][1])) for r in prometheus.query(
            'max by (state) (ecr_token_webhook_secrets{job="ecr-token-webhook"})'
        )}
        got["valid"] = got.pop("fresh", 0) + got.pop("due", 0)
        return got if got == want else None

    try:
        until("Prometheus's answer to the secrets by state", states, timeout=60, interval=1)
    except TimeoutError as e:
        last = prometheus.query("ecr_token_webhook_secrets")
        pytest.fail(f"{e}: want {want}, last answer {last}\n{prometheus.explain()}", pytrace=False)

    # The earliest expiry is the expired secret's, to the second; the leader is the one replica.
    assert prometheus.value("min(ecr_token_webhook_secrets_earliest_expiry_timestamp_seconds)") == EXPIRED_AT
    assert prometheus.value("sum(ecr_token_webhook_leader)") == 1
    # The sum over states is every opted-in secret: none is counted twice or left out.
    assert prometheus.value("sum(ecr_token_webhook_secrets)") == total


def test_every_metric_the_rules_and_dashboard_use_is_scraped(prometheus: Prometheus, secrets: None):
    names = set(prometheus.get("/api/v1/label/__name__/values"))
    for path in (ALERTS, DASHBOARD):
        used = set(re.findall(r"ecr_token_webhook_[a-z_]+", path.read_text()))
        assert used and used <= names, f"{path.name} uses metrics Prometheus did not scrape: {sorted(used - names)}"


def rules_by_name(prometheus: Prometheus) -> dict[str, dict]:
    return {r["name"]: r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]}


def test_shipped_rules_evaluate_against_the_real_series(prometheus: Prometheus, secrets: None):
    """The rules run against what the binary exports: no evaluation errors, and the alerts this
    cluster should raise are pending (every one waits longer than the test)."""
    names = {a["alert"] for g in yaml.safe_load(ALERTS.read_text())["spec"]["groups"] for a in g["rules"]}
    pending = {
        "EcrTokenWebhookTokenExpired",  # prom-expired
        "EcrTokenWebhookTokenExpiringSoon",  # the earliest expiry is past
        "EcrTokenWebhookSecretsWithoutToken",  # prom-no-token, prom-error
        "EcrTokenWebhookCertificateExpiringSoon",  # the tier's serving certificate lasts a day
    }

    # Nothing here is down or failing (the writes the tests make go through), whatever ran before.
    quiet = {
        "EcrTokenWebhookEcrRequestsFailing",
        "EcrTokenWebhookRefresherStalled",
        "EcrTokenWebhookNoLeader",
        "EcrTokenWebhookCallersRefused",  # no caller authentication here: nothing is refused
    }

    def evaluated() -> dict | None:
        rules = rules_by_name(prometheus)
        done = set(rules) == names and not any(r["lastEvaluation"].startswith("0001-") for r in rules.values())
        active = {n for n, r in rules.items() if r["state"] != "inactive"}
        return rules if done and pending <= active and not active & quiet else None

    try:
        rules = until("the rules evaluated, the expected ones pending", evaluated, timeout=60, interval=1)
    except TimeoutError as e:
        got = {n: (r["state"], r["health"], r.get("lastError", "")) for n, r in rules_by_name(prometheus).items()}
        pytest.fail(f"{e}: {got}\n{prometheus.explain()}", pytrace=False)
    for name, r in rules.items():
        assert r["health"] == "ok" and not r.get("lastError"), (name, r.get("lastError"))
        if name in pending:
            assert r["state"] == "pending", (name, r["state"])
    [expired] = rules["EcrTokenWebhookTokenExpired"]["alerts"]
    assert float(expired["value"]) == 1, expired
    assert expired["annotations"]["summary"] == "1 opted-in secret(s) hold an expired ECR token"


# A region no other test calls, so its ECR series start with the failure below.
FAILING_REGION = "ap-south-1"


def alert(prometheus: Prometheus, name: str, **labels: str) -> dict | None:
    for a in prometheus.get("/api/v1/alerts")["alerts"]:
        if a["labels"]["alertname"] == name and all(a["labels"].get(k) == v for k, v in labels.items()):
            return a
    return None


def test_alerts_fire_on_the_first_failure_and_resolve_after_recovery(
    cluster: Cluster, webhook: Webhook, prometheus: Prometheus, secrets: None
):
    """One write that fails open fires EcrTokenWebhookFailingOpen (it has no `for`); the
    region's first call failing makes EcrTokenWebhookEcrRequestsFailing pending (its `for` is 5
    minutes, which promtool's tests cover), and the region's first success after ECR answers
    again clears it. Before the failure, every admission outcome is scraped at 0."""
    failed_open = prometheus.query('ecr_token_webhook_admission_requests_total{job="ecr-token-webhook",outcome="failed_open"}')
    # CREATE and UPDATE for the five kinds, whether or not any write has failed yet.
    assert len(failed_open) == 10, failed_open
    assert not prometheus.query(f'ecr_token_webhook_ecr_requests_total{{region="{FAILING_REGION}"}}')

    webhook.ecr.refused_regions.add(FAILING_REGION)
    name = "prom-first-failure"
    registry = f"123456789012.dkr.ecr.{FAILING_REGION}.amazonaws.com"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": NS, "labels": {INJECT_LABEL: "true"}, "annotations": {REGISTRIES: registry}},
        # {"auths":{}}: valid without a token, so the write that fails open is stored.
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
    }
    try:
        cluster.kubectl("create", "-f", "-", input=json.dumps(secret))
        written = annotations(cluster.get_json("secret", name, "-n", NS))
        assert written.get(ERROR, "").startswith("no ECR token"), written

        def state(alertname: str, wanted: str | None, **labels: str):
            a = alert(prometheus, alertname, **labels)
            got = a["state"] if a else None
            return (a or True) if got == wanted else None

        try:
            firing = until("FailingOpen firing", lambda: state("EcrTokenWebhookFailingOpen", "firing"), timeout=60, interval=1)
            assert firing["labels"]["severity"] == "warning", firing
            until(
                f"EcrRequestsFailing pending for {FAILING_REGION}",
                lambda: state("EcrTokenWebhookEcrRequestsFailing", "pending", region=FAILING_REGION),
                timeout=60,
                interval=1,
            )
            # At the first scrape of the region's failure (a series born at 1), the rule already
            # counts it, where increase() alone, which needs two samples, sees nothing.
            samples = prometheus.get(
                "/api/v1/query",
                query=f'ecr_token_webhook_ecr_requests_total{{region="{FAILING_REGION}",outcome!="success"}}[5m]',
            )["result"]
            first = min(float(r["values"][0][0]) for r in samples)
            rule = next(a for g in yaml.safe_load(ALERTS.read_text())["spec"]["groups"] for a in g["rules"] if a.get("alert") == "EcrTokenWebhookEcrRequestsFailing")
            at_first = prometheus.get("/api/v1/query", query=rule["expr"], time=str(first))["result"]
            assert [r["metric"]["region"] for r in at_first] == [FAILING_REGION], at_first
            increase_only = prometheus.get(
                "/api/v1/query",
                query='sum by (namespace, region) (increase(ecr_token_webhook_ecr_requests_total{outcome!="success"}[15m])) > 0',
                time=str(first),
            )["result"]
            assert [r for r in increase_only if r["metric"]["region"] == FAILING_REGION] == [], increase_only
            # ECR answers again: the next write (the refresher's touch, or this one) after the
            # 2 s back-off gets a token, and the region's first success clears the alert.
            webhook.ecr.refused_regions.discard(FAILING_REGION)

            def renewed() -> bool:
                cluster.kubectl("annotate", "secret", name, "-n", NS, f"{TOUCHED_AT}={time.time()}", "--overwrite")
                return EXPIRES_AT in annotations(cluster.get_json("secret", name, "-n", NS))

            until("a token once ECR answers", renewed, timeout=60, interval=1)
            until(
                f"EcrRequestsFailing cleared for {FAILING_REGION}",
                lambda: state("EcrTokenWebhookEcrRequestsFailing", None, region=FAILING_REGION),
                timeout=60,
                interval=1,
            )
        except TimeoutError as e:
            pytest.fail(f"{e}: {prometheus.get('/api/v1/alerts')}\n{prometheus.explain()}", pytrace=False)
    finally:
        webhook.ecr.refused_regions.discard(FAILING_REGION)
        cluster.kubectl("delete", "secret", name, "-n", NS, "--ignore-not-found", check=False)
