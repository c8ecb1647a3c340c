"""The guard (deploy/components/guard-v1beta1, the 1.28/1.29 form of deploy/components/guard)
on the real API server: acting as the webhook's service account, a touch of an opted-in secret
passes (the webhook's mutation runs first and the guard sees its result), and so does the
refresher's renewal; everything else the guard exists to stop is refused; other users are not
affected.

The service account gets extra grants here (every verb on secrets), so each refusal below is
the guard's and not RBAC's: the guard must hold even where RBAC is wider than deploy/ ships."""

from __future__ import annotations

import base64
import json
from typing import Callable

import pytest

from cluster import Cluster, until
from test_guard_component import GUARD_V1BETA1, render_component
from tier import (
    EXPIRES_AT,
    INJECT_LABEL,
    NAMESPACE,
    RENEWAL_WAIT_SECONDS,
    TOUCHED_AT,
    WEBHOOK_USER,
    Webhook,
    annotations,
    argocd_secret,
    decoded,
)

POLICY = "ecr-token-webhook-guard"
REFUSED_BY_GUARD = f"ValidatingAdmissionPolicy '{POLICY}'"
# The start of each rule's message in policy.yaml.
NO_CREATE_DELETE = "may not create or delete Secrets"
ONLY_OPTED_IN = "may change only Secrets labelled"
FIXED_FIELDS = "may not change a Secret's labels"
ONLY_OWN_ANNOTATIONS = "may change only the annotations"
ONLY_OWN_DATA = "may change only the data keys"
NS = "tier-guard"
TLS_SECRET = "ecr-token-webhook-self-managed-tls"

# Test-only: the service account may do anything to secrets as far as RBAC goes.
WIDE_GRANTS = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "tier-guard-wide-secret-grants"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["get", "list", "create", "update", "patch", "delete"],
            }
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "tier-guard-wide-secret-grants"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tier-guard-wide-secret-grants"},
        "subjects": [{"kind": "ServiceAccount", "name": "ecr-token-webhook", "namespace": NAMESPACE}],
    },
]


def as_webhook(cluster: Cluster, *args: str, input: str | None = None):
    return cluster.kubectl(f"--as={WEBHOOK_USER}", *args, input=input, check=False)


def assert_refused_by_guard(proc, because: str) -> None:
    assert proc.returncode != 0, f"not refused: {proc.stdout}"
    assert REFUSED_BY_GUARD in proc.stderr, f"refused, but not by the guard:\n{proc.stderr}"
    # The rule's own message, not a CEL evaluation error (which failurePolicy Fail also turns
    # into a refusal).
    assert because in proc.stderr, f"refused by the guard, but not because {because!r}:\n{proc.stderr}"


@pytest.fixture(scope="module")
def guard(cluster: Cluster, webhook: Webhook, tmp_path_factory) -> dict:
    """The v1beta1 guard applied and in force; the policy object as the server holds it."""
    cluster.ensure_namespace(NS)
    cluster.apply(WIDE_GRANTS)
    # As a user's kustomization includes it; its `namespace:` lands in the cluster-scoped
    # policy objects too (kustomize does not know their scope), which the API server drops.
    objects = render_component(GUARD_V1BETA1, tmp_path_factory.mktemp("guard"))
    assert sorted(o["kind"] for o in objects) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    cluster.apply(objects)
    try:
        # The policy's status.typeChecking is written by kube-controller-manager, which this
        # tier does not run: an expression that does not compile shows up below instead, as
        # the touch being refused (failurePolicy Fail).
        # A policy takes effect a moment after it is written: probe until the guard answers.
        cluster.kubectl("create", "secret", "generic", "unlabelled-probe", "-n", NS, "--from-literal=k=v")

        def in_force() -> bool:
            got = as_webhook(cluster, "annotate", "--dry-run=server", "-n", NS, "secret/unlabelled-probe", "probe=1")
            return got.returncode != 0 and REFUSED_BY_GUARD in got.stderr

        until("the guard refusing a probe", in_force, timeout=60, interval=0.5)
        yield cluster.get_json("validatingadmissionpolicy", POLICY)
    finally:
        for kind, name in [
            ("validatingadmissionpolicybinding", POLICY),
            ("validatingadmissionpolicy", POLICY),
            ("clusterrolebinding", "tier-guard-wide-secret-grants"),
            ("clusterrole", "tier-guard-wide-secret-grants"),
        ]:
            cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)


def create_opted_in(cluster: Cluster, name: str, namespace: str = NS) -> dict:
    cluster.kubectl("create", "-f", "-", input=json.dumps(argocd_secret(name, namespace)))
    secret = cluster.get_json("secret", name, "-n", namespace)
    assert EXPIRES_AT in annotations(secret), "the webhook did not inject the secret"
    return secret


def test_touch_by_the_webhook_identity_passes(cluster: Cluster, guard: dict):
    before = create_opted_in(cluster, "touched")
    got = as_webhook(
        cluster, "patch", "-n", NS, "secret/touched", "--type=merge", "-o", "json",
        "-p", json.dumps({"metadata": {"annotations": {TOUCHED_AT: "2030-01-01T00:00:00Z"}}}),
    )
    assert got.returncode == 0, got.stderr
    after = json.loads(got.stdout)
    assert annotations(after)[TOUCHED_AT] == "2030-01-01T00:00:00Z"
    # The webhook ran on the touch (it rewrites the token data), and the guard let it through.
    assert decoded(after, "username") == "AWS"
    assert decoded(after, "url") == decoded(before, "url")


def test_refresher_renews_under_the_guard(cluster: Cluster, webhook: Webhook, guard: dict):
    """The real refresher's touch, with the webhook's new password and expires-at in it."""
    first = create_opted_in(cluster, "renewed-under-guard")
    first_expiry = annotations(first)[EXPIRES_AT]

    def renewed() -> dict | None:
        s = cluster.get_json("secret", "renewed-under-guard", "-n", NS)
        a = annotations(s)
        return s if TOUCHED_AT in a and a.get(EXPIRES_AT, "") > first_expiry else None

    secret = until("a renewal under the guard", renewed, timeout=RENEWAL_WAIT_SECONDS, interval=1)
    assert decoded(secret, "password") != decoded(first, "password")
    assert 'ecr_token_webhook_refresh_touches_total{outcome="forbidden"}' not in webhook.metrics()


def _patch(body: dict) -> Callable[[str], list[str]]:
    return lambda name: ["patch", "-n", NS, f"secret/{name}", "--type=merge", "-p", json.dumps(body)]


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


# What a stolen service-account token might try on an opted-in secret:
# (id, kubectl arguments for the secret's name, the rule that refuses it).
REFUSED_CHANGES: list[tuple[str, Callable[[str], list[str]], str]] = [
    ("another-annotation",
     lambda n: ["annotate", "-n", NS, f"secret/{n}", "example.com/owner=mallory"], ONLY_OWN_ANNOTATIONS),
    ("role-arn-annotation",
     lambda n: ["annotate", "-n", NS, f"secret/{n}", "ecr-token-webhook/role-arn=arn:aws:iam::210987654321:role/other"],
     ONLY_OWN_ANNOTATIONS),
    ("add-a-label", lambda n: ["label", "-n", NS, f"secret/{n}", "team=mallory"], FIXED_FIELDS),
    ("change-the-argocd-label",
     lambda n: ["label", "--overwrite", "-n", NS, f"secret/{n}", "argocd.argoproj.io/secret-type=repo-creds"],
     FIXED_FIELDS),
    ("remove-the-opt-in-label", lambda n: ["label", "-n", NS, f"secret/{n}", f"{INJECT_LABEL}-"], ONLY_OPTED_IN),
    ("change-url-in-data", _patch({"data": {"url": _b64("evil.example.com/charts")}}), ONLY_OWN_DATA),
    ("add-a-data-key", _patch({"data": {"proxy": _b64("http://evil.example.com")}}), ONLY_OWN_DATA),
    ("owner-reference", _patch({"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "00000000-0000-0000-0000-000000000000"}]}}),
     FIXED_FIELDS),
    ("finalizer", _patch({"metadata": {"finalizers": ["example.com/never"]}}), FIXED_FIELDS),
    ("immutable", _patch({"immutable": True}), FIXED_FIELDS),
    ("delete", lambda n: ["delete", "-n", NS, f"secret/{n}"], NO_CREATE_DELETE),
]


@pytest.mark.parametrize(("change", "because"), [c[1:] for c in REFUSED_CHANGES], ids=[c[0] for c in REFUSED_CHANGES])
def test_webhook_identity_cannot_change_an_opted_in_secret_otherwise(
    cluster: Cluster, guard: dict, change, because: str, request
):
    name = f"target-{request.node.callspec.id}"
    before = create_opted_in(cluster, name)
    assert_refused_by_guard(as_webhook(cluster, *change(name)), because)
    after = cluster.get_json("secret", name, "-n", NS)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_webhook_identity_cannot_touch_a_secret_without_the_label(cluster: Cluster, guard: dict):
    cluster.kubectl("create", "secret", "generic", "not-opted-in", "-n", "kube-system", "--from-literal=k=v")
    touch = _patch({"metadata": {"annotations": {TOUCHED_AT: "2030-01-01T00:00:00Z"}}})("not-opted-in")
    touch[touch.index(NS)] = "kube-system"
    assert_refused_by_guard(as_webhook(cluster, *touch), ONLY_OPTED_IN)


def test_webhook_identity_cannot_create_secrets(cluster: Cluster, guard: dict):
    assert_refused_by_guard(as_webhook(cluster, "create", "secret", "generic", "made-by-webhook", "-n", NS,
                                       "--from-literal=k=v"), NO_CREATE_DELETE)
    # Not even one that opts in.
    assert_refused_by_guard(
        as_webhook(cluster, "create", "-f", "-", input=json.dumps(argocd_secret("opted-in-by-webhook", NS))),
        NO_CREATE_DELETE,
    )


def test_self_managed_tls_secret_stays_writable(cluster: Cluster, guard: dict):
    """Self-managed TLS updates its own Secret by name; that one is outside the guard's rules
    (but not outside create/delete), and only in the webhook's namespace."""
    tls = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": TLS_SECRET, "namespace": NAMESPACE},
        "data": {"tls.crt": "", "tls.key": ""},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(tls))
    update = _patch({"data": {"ca.crt": _b64("pem"), "tls.crt": _b64("pem"), "tls.key": _b64("pem")},
                     "metadata": {"annotations": {"ecr-token-webhook/renew-after": "2030-01-01T00:00:00Z"}}})
    args = update(TLS_SECRET)
    args[args.index(NS)] = NAMESPACE
    got = as_webhook(cluster, *args)
    assert got.returncode == 0, got.stderr
    assert_refused_by_guard(as_webhook(cluster, "delete", "-n", NAMESPACE, f"secret/{TLS_SECRET}"), NO_CREATE_DELETE)
    # The same name elsewhere is an ordinary unlabelled secret.
    cluster.kubectl("create", "-f", "-", input=json.dumps({**tls, "metadata": {"name": TLS_SECRET, "namespace": NS}}))
    assert_refused_by_guard(as_webhook(cluster, *update(TLS_SECRET)), ONLY_OPTED_IN)


def test_other_users_are_not_affected(cluster: Cluster, guard: dict):
    create_opted_in(cluster, "admin-owned")
    for args in (
        ["annotate", "-n", NS, "secret/admin-owned", "example.com/owner=platform"],
        ["label", "-n", NS, "secret/admin-owned", "team=platform"],
        _patch({"data": {"url": _b64("123456789012.dkr.ecr.eu-west-1.amazonaws.com")}})("admin-owned"),
        ["create", "secret", "generic", "admin-made", "-n", NS, "--from-literal=k=v"],
        ["delete", "-n", NS, "secret/admin-owned"],
    ):
        got = cluster.kubectl(*args, check=False)
        assert got.returncode == 0, f"admin: kubectl {' '.join(args)}:\n{got.stderr}"
