"""The admission path as the API server sees it: a real kube-apiserver (this tier's harness, run
as a program, so Python finds the tier's modules beside it) calls ecr-token-webhook (release
build, warm cache, local ECR: tests/kube/fake_ecr.py) and, in turn, the constant-patch null
webhook (benches/floor) for touches of one Argo CD repository secret, and its own histogram
apiserver_admission_webhook_admission_duration_seconds gives each one's mean.
Prints ours, the floor and the ratio per round.

  ECR_TOKEN_WEBHOOK_KUBE_APISERVER=/path/to/kube-apiserver \
    .venv/bin/python tests/kube/bench_apiserver.py [TOUCHES] [ROUNDS]     (defaults: 30 3)

Needs `cargo build --release --bin ecr-token-webhook --example null-webhook` first.
"""

from __future__ import annotations

import base64
import datetime
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster import CA, Cluster, Proc, clean_env, free_ports, until, write
from conftest import APISERVER_ARGS, find_kubectl

REPO = Path(__file__).resolve().parents[2]

METRIC = "apiserver_admission_webhook_admission_duration_seconds"
OURS, FLOOR = "inject.ecr-token-webhook.io", "null.ecr-token-webhook.io"


def webhook_config(name: str, port: int, ca_pem: bytes) -> dict:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "bench"},
        "webhooks": [
            {
                "name": name,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/mutate",
                    "caBundle": base64.b64encode(ca_pem).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["secrets"],
                    }
                ],
                "objectSelector": {"matchLabels": {"ecr-token-webhook/inject": "true"}},
            }
        ],
    }


def histogram(c: Cluster, name: str) -> tuple[float, float]:
    """(sum, count) of the webhook's UPDATE admissions so far."""
    text = c.kubectl("get", "--raw", "/metrics").stdout
    total = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        m = re.match(rf'{METRIC}_(sum|count)\{{([^}}]*)\}} (\S+)', line)
        if m and f'name="{name}"' in m.group(2) and 'operation="UPDATE"' in m.group(2):
            total[m.group(1)] += float(m.group(3))
    return total["sum"], total["count"]


def touch(c: Cluster, n: int) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    c.kubectl(
        "-n", "argocd", "patch", "secret", "repo", "--type", "merge",
        "-p", f'{{"metadata":{{"annotations":{{"ecr-token-webhook/touched-at":"{now}-{n}"}}}}}}',
    )


def main() -> int:
    touches = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    ours_bin = REPO / "target" / "release" / "ecr-token-webhook"
    null_bin = REPO / "target" / "release" / "examples" / "null-webhook"
    for b in (ours_bin, null_bin):
        if not b.is_file():
            sys.exit(f"{b} is missing: cargo build --release --bin ecr-token-webhook --example null-webhook")
    work = Path(tempfile.mkdtemp(prefix="bench-apiserver-"))
    c = Cluster(work / "cluster", find_kubectl())
    procs: list[Proc] = []
    try:
        c.start(APISERVER_ARGS)
        ecr_port, ours_port, metrics_port, null_port = free_ports(4)
        procs.append(Proc.start("ecr", [sys.executable, str(REPO / "tests/kube/fake_ecr.py"), str(ecr_port)],
                                work / "ecr.log", clean_env(), REPO))
        ca = CA("bench-webhook-ca")
        pair = ca.issue("webhook", ips=("127.0.0.1",), server=True)
        cert, key = write(work / "tls.crt", pair.cert_pem), write(work / "tls.key", pair.key_pem)
        env = clean_env(
            AWS_ENDPOINT_URL_ECR=f"http://127.0.0.1:{ecr_port}", AWS_ACCESS_KEY_ID="AKIDBENCH",
            AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true",
            ECR_TOKEN_WEBHOOK_LOG_LEVEL="warn", ECR_TOKEN_WEBHOOK_REFRESHER="false",
        )
        procs.append(Proc.start("ours", [str(ours_bin), "serve", "--tls-cert-file", str(cert), "--tls-key-file",
                                         str(key), "--listen", f"127.0.0.1:{ours_port}", "--metrics-listen",
                                         f"127.0.0.1:{metrics_port}"], work / "ours.log", env, REPO))
        procs.append(Proc.start("null", [str(null_bin), "patch", f"127.0.0.1:{null_port}", str(work / "null")],
                                work / "null.log", clean_env(), REPO))
        null_ca = until("null webhook CA", lambda: (work / "null" / "ca.crt").is_file() and
                        (work / "null" / "ca.crt").read_bytes(), 10)
        c.ensure_namespace("argocd")
        c.apply(webhook_config(OURS, ours_port, ca.cert_pem))
        url = base64.b64encode(b"123456789012.dkr.ecr.us-east-1.amazonaws.com").decode()
        # The API server picks up a new webhook configuration within a moment: retry the create.
        until("the secret created through the webhook", lambda: c.kubectl(
            "apply", "-f", "-", check=False, input=(
                '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"repo","namespace":"argocd",'
                '"labels":{"ecr-token-webhook/inject":"true","argocd.argoproj.io/secret-type":"repository"}},'
                f'"data":{{"url":"{url}","type":"aGVsbQ==","enableOCI":"dHJ1ZQ=="}}}}'
            )).returncode == 0, 30)
        print(f"{'round':<6} {'webhook':<20} {'touches':>7} {'mean_ms':>9}")
        for r in range(1, rounds + 1):
            means = {}
            for name, port, bundle in ((OURS, ours_port, ca.cert_pem), (FLOOR, null_port, null_ca)):
                c.apply(webhook_config(name, port, bundle))
                # Until this webhook is the one called (the configuration is cached briefly).
                def called(name=name):
                    before = histogram(c, name)[1]
                    touch(c, -1)
                    return histogram(c, name)[1] > before
                until(f"{name} called", called, 30, 0.5)
                s0, n0 = histogram(c, name)
                for i in range(touches):
                    touch(c, i)
                s1, n1 = histogram(c, name)
                means[name] = (s1 - s0) / max(n1 - n0, 1)
                print(f"{r:<6} {name:<20} {int(n1 - n0):>7} {means[name] * 1000:>9.3f}")
            print(f"       ratio ours / floor: {means[OURS] / means[FLOOR]:.2f}")
        return 0
    finally:
        for p in procs:
            p.stop()
        c.stop()


if __name__ == "__main__":
    sys.exit(main())
