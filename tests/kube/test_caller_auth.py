"""Caller authentication against a real API server (docs/caller-authentication.md): the API
server is started with `--admission-control-config-file`, the AdmissionConfiguration and the
kubeconfig taken from the document itself, and presents the client certificate named there to
the webhook, which runs with `--tls-client-ca-file`. Labelled secrets get tokens through that
authenticated call; AdmissionReviews forged and sent straight to the webhook port (no
certificate, one from another CA, a self-signed one) get nothing and are counted.

A control plane of its own (the admission configuration is read at start), with the webhook as
a URL on 127.0.0.1: the kubeconfig's user is then named `127.0.0.1:<port>` rather than the
Service's `<service>.<namespace>.svc` (Endpoints may not point at loopback addresses).
Secret values are compared, never printed."""

from __future__ import annotations

import http.client
import json
import re
import ssl
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster import CA, Cluster, ClusterError, Pair, _pem_cert, _pem_key, cert_builder, free_ports, until, write
from conftest import (
    PROBE_NAMESPACE,
    _LOG_SOURCES,
    install_crds,
    mutating_webhook_configuration,
    probe_injects,
    start_webhook,
)
from fake_ecr import FakeEcr
from manifest_checks import REPO_ROOT, find_kubectl
from tier import NAMESPACE, TOKEN_LIFETIME_SECONDS, Webhook, argocd_secret, decoded, docker_auth, pull_secret

DOC = REPO_ROOT / "docs" / "caller-authentication.md"
# The name the webhook requires and the client certificate carries (as deploy/ issues it).
CLIENT_NAME = "kube-apiserver"
NS = "tier-caller-auth"


def doc_yaml(kind: str) -> dict:
    """The document's YAML block of this kind: the recipe under test is the one users copy."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    found = [yaml.safe_load(b) for b in blocks if re.search(rf"^kind: {kind}$", b, re.M)]
    assert len(found) == 1, f"{DOC.name} should show one {kind}, shows {len(found)}"
    return found[0]


def recipe(workdir: Path, webhook_port: int, client: Pair) -> Path:
    """The document's AdmissionConfiguration and kubeconfig, with this run's paths and the
    webhook's URL host as the user's name. Returns the admission configuration's path."""
    admission = doc_yaml("AdmissionConfiguration")
    kubeconfig = doc_yaml("Config")
    [user] = kubeconfig["users"]
    assert user["name"] == f"ecr-token-webhook.{NAMESPACE}.svc", "the doc names the Service as the API server dials it"
    user["name"] = f"127.0.0.1:{webhook_port}"
    user["user"]["client-certificate"] = str(write(workdir / "apiserver-client.crt", client.cert_pem))
    user["user"]["client-key"] = str(write(workdir / "apiserver-client.key", client.key_pem))
    kubeconfig_path = write(workdir / "webhook-client.kubeconfig", yaml.safe_dump(kubeconfig))
    [plugin] = admission["plugins"]
    assert plugin["name"] == "MutatingAdmissionWebhook"
    plugin["configuration"]["kubeConfigFile"] = str(kubeconfig_path)
    return write(workdir / "admission.yaml", yaml.safe_dump(admission))


def self_signed_client(name: str) -> Pair:
    """A client certificate signed by its own key, carrying the right name."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        cert_builder(subject, subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pair(_pem_cert(cert), _pem_key(key))


class AuthTier:
    def __init__(self, cluster: Cluster, webhook: Webhook, port: int, serving_ca: bytes, workdir: Path, client: Pair):
        self.cluster, self.webhook, self.port = cluster, webhook, port
        self.serving_ca, self.workdir, self.client = serving_ca, workdir, client


@pytest.fixture(scope="module")
def tier(tmp_path_factory) -> Iterator[AuthTier]:
    workdir = tmp_path_factory.mktemp("caller-auth")
    port, metrics_port = free_ports(2)
    client_ca = CA("ecr-token-webhook-test-client-ca")
    client = client_ca.issue(CLIENT_NAME, dns=(CLIENT_NAME,), client=True)
    admission = recipe(workdir, port, client)

    cluster = Cluster(workdir / "cluster", find_kubectl())
    _LOG_SOURCES.append(cluster.logs)
    try:
        cluster.start([f"--admission-control-config-file={admission}"])
        install_crds(cluster)
    except (ClusterError, TimeoutError, OSError) as e:
        cluster.stop()
        pytest.fail(f"cannot start the control plane with the admission configuration: {e}\n{cluster.logs()}", pytrace=False)

    serving_ca = CA("ecr-token-webhook-test-webhook-ca")
    serving = serving_ca.issue("ecr-token-webhook", ips=("127.0.0.1",), server=True)
    ecr = FakeEcr(TOKEN_LIFETIME_SECONDS).start()
    proc = start_webhook(
        "ecr-token-webhook (caller auth)",
        workdir,
        ecr,
        serving,
        port,
        metrics_port,
        [
            f"--tls-client-ca-file={write(workdir / 'client-ca.crt', client_ca.cert_pem, 0o644)}",
            f"--tls-client-names={CLIENT_NAME}",
            # Only the admission path here: no refresher, so no Kubernetes client either.
            "--refresher=false",
        ],
    )
    log_source = lambda: f"--- {proc.name} (last 60 lines of {proc.log})\n{proc.tail()}"  # noqa: E731
    _LOG_SOURCES.append(log_source)
    webhook = Webhook(proc, ecr, f"http://127.0.0.1:{metrics_port}")
    try:
        until("the webhook's metrics", lambda: proc.check_alive() or "caller_refusals" in webhook.metrics(), timeout=60)
        cluster.apply(mutating_webhook_configuration(serving_ca.cert_pem, port))
        cluster.ensure_namespace(PROBE_NAMESPACE)
        until("the API server calling the webhook", lambda: probe_injects(cluster), timeout=60, interval=0.5)
        cluster.ensure_namespace(NS)
        yield AuthTier(cluster, webhook, port, serving_ca.cert_pem, workdir, client)
    except (ClusterError, TimeoutError, OSError) as e:
        pytest.fail(f"cannot start the webhook with caller authentication: {e}\n{proc.tail()}\n{cluster.logs()}", pytrace=False)
    finally:
        proc.stop()
        ecr.stop()
        cluster.stop()
        _LOG_SOURCES.remove(log_source)
        _LOG_SOURCES.remove(cluster.logs)


def refusals(webhook: Webhook) -> dict[str, int]:
    found = re.findall(r'^ecr_token_webhook_caller_refusals_total\{reason="(\w+)"\} (\d+)', webhook.metrics(), re.M)
    return {reason: int(n) for reason, n in found}


def test_labelled_secrets_get_tokens_through_the_authenticated_call(tier: AuthTier):
    before = refusals(tier.webhook)
    made = []
    for i in range(3):
        tier.cluster.kubectl("create", "-f", "-", input=json.dumps(argocd_secret(f"repo-{i}", NS)))
        made.append(tier.cluster.get_json("secret", f"repo-{i}", "-n", NS))
    tier.cluster.kubectl("create", "-f", "-", input=json.dumps(pull_secret("pull", NS)))
    pull = tier.cluster.get_json("secret", "pull", "-n", NS)
    passwords = [decoded(s, "password") for s in made] + [docker_auth(pull)["password"]]
    for p in passwords:
        assert tier.webhook.ecr.find(p) is not None, "a secret's password is not a token the local ECR issued"
    # failurePolicy Fail: had the API server's call been refused, the creates would have failed.
    assert refusals(tier.webhook) == before, "the API server's calls were never refused"
    print(f"\nsecrets filled by the API server through the authenticated call: {len(passwords)}")


def forged_review() -> bytes:
    """A review a pod could write by hand: a team's secret in someone else's namespace."""
    review = json.loads((REPO_ROOT / "tests" / "fixtures" / "basic-auth-create.json").read_text())
    review["request"]["namespace"] = "team-b"
    review["request"]["object"]["metadata"]["namespace"] = "team-b"
    return json.dumps(review).encode()


def send(tier: AuthTier, identity: Pair | None) -> str:
    """POSTs the forged review straight to the webhook port; returns the outcome: `token`, an
    HTTP status without one, or the TLS/connection error."""
    ctx = ssl.create_default_context(cadata=tier.serving_ca.decode())
    if identity is not None:
        d = tier.workdir / f"id-{abs(hash(identity.cert_pem))}"
        d.mkdir(exist_ok=True)
        ctx.load_cert_chain(write(d / "c.crt", identity.cert_pem), write(d / "c.key", identity.key_pem))
    conn = http.client.HTTPSConnection("127.0.0.1", tier.port, context=ctx, timeout=10)
    try:
        conn.request("POST", "/mutate?timeout=5s", body=forged_review(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        return "token" if resp.status == 200 and b'"patch"' in body else f"HTTP {resp.status}"
    except (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError) as e:
        return f"refused: {type(e).__name__}: {e}"
    finally:
        conn.close()


def test_forged_reviews_without_the_api_servers_certificate_get_no_token(tier: AuthTier):
    other_ca = CA("some-other-ca")
    forged = {
        "no certificate": None,
        "a certificate from another CA": other_ca.issue(CLIENT_NAME, dns=(CLIENT_NAME,), client=True),
        "a self-signed certificate": self_signed_client(CLIENT_NAME),
    }
    before = refusals(tier.webhook)
    outcomes = {what: send(tier, identity) for what, identity in forged.items()}
    refused = {what: o for what, o in outcomes.items() if o.startswith("refused")}
    assert refused == outcomes, f"forged reviews answered: {outcomes}"

    def counted() -> dict[str, int] | None:
        now = refusals(tier.webhook)
        delta = {r: now[r] - before.get(r, 0) for r in now}
        return delta if sum(delta.values()) == len(forged) else None

    delta = until("the refusals counted", counted, timeout=10)
    assert delta == {"no_certificate": 1, "untrusted": 2, "expired": 0, "wrong_name": 0}
    assert "refused a caller at the TLS handshake" in tier.webhook.proc.log.read_text()
    assert "peer=127.0.0.1:" in tier.webhook.proc.log.read_text()
    # The same review with the API server's certificate would have been answered with a token:
    # the refusals above are the authentication's doing, not a broken request.
    assert send(tier, tier.client) == "token"
    print(f"\nforged reviews refused: {len(refused)} of {len(forged)} ({', '.join(forged)})")
