"""The policy file as the manifests ship it: deploy/components/policy-file (kustomize) and the
chart's policy.rules. The file is mounted where ECR_TOKEN_WEBHOOK_POLICY_FILE points, from a
ConfigMap that keeps its name (so a change is reloaded in place, not rolled out), the
--allowed-* settings are left at their defaults (the binary refuses them beside a file), and
every install may read namespace labels (get on namespaces, nothing more). That the binary
accepts the shipped example is checked by the Rust tests (src/policy/tests.rs)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
import yaml
from helm_python.errors import HelmError

from manifest_checks import (
    KUSTOMIZE_BASE,
    SCHEMA_VERSIONS,
    by_kind,
    config_map_data,
    container,
    kustomize,
    one,
    pod_spec,
    rules_as_set,
    schema_errors,
)
from test_guard_component import render_component
from test_helm import NAMESPACED, POLICY_RULES as RULES, SELF_MANAGED, render

COMPONENT = KUSTOMIZE_BASE.parent / "components" / "policy-file"
OVERLAYS = KUSTOMIZE_BASE.parent / "overlays"
POLICY_RULES = {"policy": {"rules": RULES}}


def mounted_policy(objs: list[dict]) -> tuple[dict, str]:
    """The ConfigMap mounted at the directory of ECR_TOKEN_WEBHOOK_POLICY_FILE, and the file's
    name in it."""
    path = PurePosixPath(config_map_data(objs)["ECR_TOKEN_WEBHOOK_POLICY_FILE"])
    [mount] = [m for m in container(objs).get("volumeMounts", []) if m["mountPath"] == str(path.parent)]
    assert mount.get("readOnly") is True
    [volume] = [v for v in pod_spec(objs)["volumes"] if v["name"] == mount["name"]]
    cm = one(objs, "ConfigMap", volume["configMap"]["name"])
    assert path.name in cm["data"], f"{path.name} not in ConfigMap {cm['metadata']['name']}"
    return cm, path.name


def assert_flags_at_defaults(objs: list[dict]) -> None:
    data = config_map_data(objs)
    assert data.get("ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES", "*") == "*"
    assert data.get("ECR_TOKEN_WEBHOOK_ALLOWED_REGISTRIES", "*") == "*"
    assert "ECR_TOKEN_WEBHOOK_ALLOWED_ROLE_ARNS" not in data


def assert_namespace_labels_readable(objs: list[dict]) -> None:
    """`get` on namespaces, bound to the webhook's ServiceAccount; no list or watch."""
    roles = [r for r in by_kind(objs, "ClusterRole") if ("", "namespaces", "", "get") in rules_as_set(r["rules"])]
    assert len(roles) == 1
    assert {v for (_, res, _, v) in rules_as_set(roles[0]["rules"]) if res == "namespaces"} == {"get"}
    name = roles[0]["metadata"]["name"]
    assert any(b["roleRef"]["name"] == name for b in by_kind(objs, "ClusterRoleBinding"))


@pytest.mark.parametrize("base", [KUSTOMIZE_BASE, OVERLAYS / "self-managed"], ids=["base", "self-managed"])
def test_the_component_mounts_the_policy_file(tmp_path, base):
    objs = render_component(COMPONENT, tmp_path, (base,))
    cm, key = mounted_policy(objs)
    # Applied in place: the kubelet updates the file and the binary reloads it.
    assert cm["metadata"]["name"] == "ecr-token-webhook-policy"
    assert cm["metadata"]["namespace"] == "ecr-token-webhook"
    assert cm["data"][key] == (COMPONENT / "policy.yaml").read_text()
    assert_flags_at_defaults(objs)
    assert_namespace_labels_readable(objs)
    # Other mounts are kept (cert-manager's TLS Secret in the base).
    if base == KUSTOMIZE_BASE:
        assert {v["name"] for v in pod_spec(objs)["volumes"]} == {"tls", "policy"}
    for version in SCHEMA_VERSIONS:
        assert schema_errors(objs, version) == []


def test_the_example_policy_has_the_files_shape():
    doc = yaml.safe_load((COMPONENT / "policy.yaml").read_text())
    assert set(doc) == {"rules"}
    for rule in doc["rules"]:
        assert {"namespaces", "registries"} <= set(rule)


def test_the_namespaced_overlay_keeps_get_on_namespaces():
    objs = kustomize(OVERLAYS / "namespaced")
    assert_namespace_labels_readable(objs)
    assert [r["metadata"]["name"] for r in by_kind(objs, "ClusterRole")] == ["ecr-token-webhook-namespaces"]


@pytest.mark.parametrize("values", [{}, POLICY_RULES, {**POLICY_RULES, **SELF_MANAGED}], ids=["defaults", "rules", "rules self-managed"])
def test_the_chart_grants_get_on_namespaces(values):
    assert_namespace_labels_readable(render(values))


def test_the_chart_renders_policy_rules_into_a_mounted_file():
    objs = render({**POLICY_RULES, **SELF_MANAGED})
    cm, key = mounted_policy(objs)
    assert yaml.safe_load(cm["data"][key]) == {"rules": RULES}
    assert_flags_at_defaults(objs)
    assert "ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES" not in config_map_data(objs)
    # A rules change is reloaded, not rolled out: the pods' checksum covers the settings only.
    def pod_annotations(objs: list[dict]) -> dict:
        return one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]

    assert pod_annotations(objs) == pod_annotations(render({**SELF_MANAGED, "policy": {"rules": RULES[:1]}}))
    for version in SCHEMA_VERSIONS:
        assert schema_errors(objs, version) == []


def test_without_rules_the_chart_mounts_no_policy():
    objs = render()
    assert "ECR_TOKEN_WEBHOOK_POLICY_FILE" not in config_map_data(objs)
    assert not [c for c in by_kind(objs, "ConfigMap") if c["metadata"]["name"].endswith("-policy")]


def test_namespaced_rules_may_name_only_the_listed_namespaces():
    objs = render({**NAMESPACED, **POLICY_RULES})
    data = config_map_data(objs)
    assert data["ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES"] == "argocd,apps"
    assert "ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES" not in data
    outside = [{**RULES[0], "namespaces": ["argocd", "team-*"]}]
    with pytest.raises(HelmError, match=r'policy.rules may name only rbac.secretNamespaces.*"team-\*"'):
        render({**NAMESPACED, "policy": {"rules": outside}})


@pytest.mark.parametrize(
    "policy,complaint",
    [
        ({"rules": RULES, "allowedNamespaces": ["argocd"]}, "policy.rules replaces"),
        ({"rules": RULES, "allowedRoleArns": ["arn:aws:iam::111111111111:role/x"]}, "policy.rules replaces"),
        ({"rules": [{"namespaces": ["a"]}]}, "registries"),
        ({"rules": [{"namespaces": ["a"], "registries": ["*"], "namespace": "x"}]}, "namespace"),
        ({"rules": [{"namespaces": ["a"], "registries": ["*"], "defaultRole": "team-a"}]}, "defaultRole"),
        (
            {"rules": [{"namespaces": ["a"], "registries": ["*"], "namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "Equals"}]}}]},
            "operator",
        ),
    ],
)
def test_bad_rules_are_refused_at_render(policy, complaint):
    with pytest.raises(HelmError, match=complaint):
        render({"policy": policy})
