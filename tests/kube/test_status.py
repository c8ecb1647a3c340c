"""`ecr-token-webhook status` against the real API server, with the admin's kubeconfig: a secret
the webhook has written reads as healthy (exit 0), one it could not serve as an error with the
webhook's reason (exit 1), and `-o json` says the same for scripts. No value is printed."""

from __future__ import annotations

import json
import subprocess

import pytest

from cluster import Cluster, clean_env
from conftest import webhook_binary
from tier import REFRESH_MARGIN, Webhook, argocd_secret, decoded

NS = "tier-status"


def status(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(webhook_binary()), "status", "--refresh-margin", REFRESH_MARGIN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(KUBECONFIG=str(cluster.kubeconfig)),
        check=False,
    )


@pytest.fixture(scope="module")
def ns(cluster: Cluster, webhook: Webhook) -> str:
    cluster.ensure_namespace(NS)
    return NS


def test_status_reads_healthy_and_broken_secrets(cluster: Cluster, webhook: Webhook, ns: str):
    cluster.kubectl("create", "-f", "-", input=json.dumps(argocd_secret("good", ns)))
    good = cluster.get_json("secret", "good", "-n", ns)
    token = decoded(good, "password")

    out = status(cluster, "-n", ns)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "good" in out.stdout and "argocd-repository" in out.stdout
    # A 45-second token under a 20-second margin is fresh, or due by the time status reads it.
    assert any(s in out.stdout for s in ("fresh", "due")), out.stdout

    broken = argocd_secret("broken", ns)
    broken["stringData"]["url"] = "ghcr.io/acme/charts"
    cluster.kubectl("create", "-f", "-", input=json.dumps(broken))
    out = status(cluster, "-n", ns)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "is not an ECR registry" in out.stdout, out.stdout

    doc = status(cluster, "-n", ns, "-o", "json")
    assert doc.returncode == 1, doc.stderr
    rows = {s["name"]: s for s in json.loads(doc.stdout)["secrets"]}
    assert rows["broken"]["state"] == "error"
    assert rows["good"]["state"] in ("fresh", "due")
    assert token not in out.stdout + doc.stdout, "a token reached status's output"

    one = status(cluster, "-n", ns, "good")
    assert one.returncode == 0, one.stdout + one.stderr
