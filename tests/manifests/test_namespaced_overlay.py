"""deploy/overlays/namespaced: the base with the refresher's cluster-wide grants replaced by a
Role and RoleBinding per listed namespace, and the refresher and the policy limited to those
namespaces. Rendered with `kubectl kustomize`, alone and combined with the self-managed overlay
the way its comment says (`../self-managed` instead of `../../base`)."""

from __future__ import annotations

import json
import re

import pytest

from manifest_checks import (
    KUSTOMIZE_BASE,
    SCHEMA_VERSIONS,
    assert_namespaced_mode,
    assert_no_create_on_secrets,
    assert_no_rbac_wildcards_or_escalation,
    assert_self_managed_secret_shipped_empty,
    cli_env_vars,
    config_map_data,
    kustomize,
    kustomize_with_base,
    one,
    schema_errors,
)
from test_kustomize import NAME, NAMESPACE

OVERLAY = KUSTOMIZE_BASE.parent / "overlays" / "namespaced"
SELF_MANAGED = KUSTOMIZE_BASE.parent / "overlays" / "self-managed"
EXAMPLE_NAMESPACES = ["argocd", "apps"]
ROLE = "ecr-token-webhook-refresher"


@pytest.fixture(scope="module")
def objs() -> list[dict]:
    return kustomize(OVERLAY)


@pytest.fixture(scope="module")
def self_managed_objs(tmp_path_factory) -> list[dict]:
    """The overlay with `../self-managed` as its base, as its comment tells users to do."""
    return kustomize_with_base(OVERLAY, SELF_MANAGED, tmp_path_factory.mktemp("namespaced-self-managed"))


def names(objects):
    return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects if o["kind"] != "ConfigMap"}


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_validates_against_kubernetes_schemas(objs, self_managed_objs, version):
    errors = schema_errors(objs, version) + schema_errors(self_managed_objs, version)
    assert not errors, "\n".join(errors)


def test_refresher_has_roles_only_in_the_listed_namespaces(objs):
    assert_namespaced_mode(objs, EXAMPLE_NAMESPACES, ROLE)
    assert_no_create_on_secrets(objs)
    assert_no_rbac_wildcards_or_escalation(objs)


def without_config_hash(obj: dict) -> dict:
    """The object with the generated ConfigMap's content hash taken out of its name."""
    return json.loads(re.sub(r"(ecr-token-webhook-config)-[a-z0-9]{10}\b", r"\1", json.dumps(obj)))


def test_everything_else_is_the_base(base_objects, objs):
    removed = {("ClusterRole", None, NAME), ("ClusterRoleBinding", None, NAME)}
    added = {(kind, ns, ROLE) for kind in ("Role", "RoleBinding") for ns in EXAMPLE_NAMESPACES}
    assert names(objs) == (names(base_objects) - removed) | added
    kept = [o for o in base_objects if o["kind"] != "ConfigMap" and (o["kind"], None, o["metadata"]["name"]) not in removed]
    for base in kept:
        overlay = one([o for o in objs if o["metadata"].get("namespace") == base["metadata"].get("namespace")], base["kind"], base["metadata"]["name"])
        assert without_config_hash(overlay) == without_config_hash(base), base["kind"]


def test_only_the_namespace_settings_change(base_objects, objs):
    base, overlay = config_map_data(base_objects), config_map_data(objs)
    assert base["ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES"] == "*"
    assert "ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES" not in base
    assert overlay["ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES"] == ",".join(EXAMPLE_NAMESPACES)
    changed = {k for k in overlay if overlay.get(k) != base.get(k)}
    assert changed == {"ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES", "ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES"}
    assert set(overlay) <= cli_env_vars()


def test_the_roles_bind_the_webhooks_service_account(objs):
    for b in [o for o in objs if o["kind"] == "RoleBinding" and o["metadata"]["name"] == ROLE]:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]


def test_combines_with_self_managed_tls(self_managed_objs):
    assert_namespaced_mode(self_managed_objs, EXAMPLE_NAMESPACES, ROLE)
    assert_no_create_on_secrets(self_managed_objs)
    data = config_map_data(self_managed_objs)
    assert data["ECR_TOKEN_WEBHOOK_TLS_SELF_MANAGED"] == "true"
    assert_self_managed_secret_shipped_empty(self_managed_objs, data["ECR_TOKEN_WEBHOOK_TLS_SECRET_NAME"], NAMESPACE)
    assert not [o for o in self_managed_objs if o["apiVersion"].startswith("cert-manager.io/")]
    # The self-managed ClusterRole (the webhook configuration, by name) stays.
    one(self_managed_objs, "ClusterRole", "ecr-token-webhook-self-managed")
