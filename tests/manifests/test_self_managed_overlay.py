"""deploy/overlays/self-managed: the base without cert-manager, where `serve --tls-self-managed`
keeps its own CA in a Secret and injects the caBundle. Rendered with `kubectl kustomize`."""

from __future__ import annotations

import pytest

from manifest_checks import (
    CRD_KINDS_WITHOUT_KUBERNETES_SCHEMA,
    KUSTOMIZE_BASE,
    SCHEMA_VERSIONS,
    assert_no_create_on_secrets,
    assert_self_managed_secret_shipped_empty,
    by_kind,
    cli_env_vars,
    config_map_data,
    container,
    kustomize,
    one,
    pod_spec,
    rules_as_set,
    schema_errors,
)
from test_kustomize import NAME, NAMESPACE

OVERLAY = KUSTOMIZE_BASE.parent / "overlays" / "self-managed"
TLS_SECRET = "ecr-token-webhook-self-managed-tls"


@pytest.fixture(scope="module")
def objs() -> list[dict]:
    return kustomize(OVERLAY)


def test_no_cert_manager_objects_or_annotation(objs):
    assert not [o for o in objs if o["apiVersion"].startswith("cert-manager.io/")]
    hook = one(objs, "MutatingWebhookConfiguration", NAME)
    assert "cert-manager.io/inject-ca-from" not in hook["metadata"].get("annotations", {})
    # The binary fills the caBundle in; the manifest must not pin one.
    assert all("caBundle" not in w["clientConfig"] for w in hook["webhooks"])


def test_everything_else_is_the_base(base_objects, objs):
    def names(objects):
        return {
            (o["kind"], o["metadata"]["name"])
            for o in objects
            if not o["apiVersion"].startswith("cert-manager.io/") and o["kind"] != "ConfigMap"
        }

    added = {
        ("Role", "ecr-token-webhook-self-managed"),
        ("RoleBinding", "ecr-token-webhook-self-managed"),
        ("ClusterRole", "ecr-token-webhook-self-managed"),
        ("ClusterRoleBinding", "ecr-token-webhook-self-managed"),
        ("Secret", TLS_SECRET),
    }
    assert names(objs) == names(base_objects) | added
    for kind in ("MutatingWebhookConfiguration", "Service", "PodDisruptionBudget"):
        base, overlay = one(base_objects, kind, NAME), one(objs, kind, NAME)
        assert overlay.get("spec", overlay.get("webhooks")) == base.get("spec", base.get("webhooks"))


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_validates_against_kubernetes_schemas(objs, version):
    errors = schema_errors(objs, version)
    assert not errors, "\n".join(errors)
    assert not [o for o in objs if (o["apiVersion"], o["kind"]) in CRD_KINDS_WITHOUT_KUBERNETES_SCHEMA]


def test_serve_runs_self_managed_without_a_tls_volume(objs):
    c = container(objs)
    assert c["args"] == ["serve"]
    assert "volumeMounts" not in c
    assert "volumes" not in pod_spec(objs)
    data = config_map_data(objs)
    assert data["ECR_TOKEN_WEBHOOK_TLS_SELF_MANAGED"] == "true"
    assert data["ECR_TOKEN_WEBHOOK_TLS_SECRET_NAME"] == TLS_SECRET
    assert data["ECR_TOKEN_WEBHOOK_WEBHOOK_CONFIG_NAME"] == NAME
    assert data["ECR_TOKEN_WEBHOOK_SERVICE"] == one(objs, "Service", NAME)["metadata"]["name"]
    assert set(data) <= cli_env_vars()
    # Security settings are the base's, untouched by the patches.
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_rbac_grants_exactly_what_self_managed_tls_calls(objs):
    role = one(objs, "Role", "ecr-token-webhook-self-managed")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rules_as_set(role["rules"]) == {
        ("", "secrets", TLS_SECRET, "get"),
        ("", "secrets", TLS_SECRET, "update"),
    }
    assert_no_create_on_secrets(objs)
    cluster_role = one(objs, "ClusterRole", "ecr-token-webhook-self-managed")
    assert rules_as_set(cluster_role["rules"]) == {
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", NAME, "get"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", NAME, "patch"),
    }
    for kind, role_kind in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        b = one(objs, kind, "ecr-token-webhook-self-managed")
        assert b["roleRef"]["kind"] == role_kind
        assert b["roleRef"]["name"] == "ecr-token-webhook-self-managed"
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    # The base's grants are unchanged.
    assert len(by_kind(objs, "ClusterRole")) == 3 and len(by_kind(objs, "Role")) == 2


def test_every_object_carries_the_common_labels_and_namespace(objs):
    for o in objs:
        labels = o["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == NAME, o["metadata"]["name"]
        if o["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}:
            assert o["metadata"]["namespace"] == NAMESPACE, o["metadata"]["name"]


def test_the_tls_secret_is_shipped_empty_for_the_binary_to_fill(objs):
    name = config_map_data(objs)["ECR_TOKEN_WEBHOOK_TLS_SECRET_NAME"]
    assert name == TLS_SECRET
    assert_self_managed_secret_shipped_empty(objs, name, NAMESPACE)
