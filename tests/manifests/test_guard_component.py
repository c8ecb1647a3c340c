"""deploy/components/guard (admissionregistration.k8s.io/v1, Kubernetes 1.30+) and
guard-v1beta1 (1.28/1.29 with the ValidatingAdmissionPolicy gate): the same rules in both,
valid against Kubernetes' schemas, naming the identity and Secrets the rest of deploy/ uses.
What the rules allow and refuse is tested against a real API server in tests/kube/test_guard.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from manifest_checks import KUSTOMIZE_BASE, REPO_ROOT, by_kind, kustomize, one, schema_errors
import kubernetes_validate

COMPONENTS = KUSTOMIZE_BASE.parent / "components"
GUARD = COMPONENTS / "guard"
GUARD_V1BETA1 = COMPONENTS / "guard-v1beta1"
NEWEST = ".".join(kubernetes_validate.utils.latest_version().split(".")[:2])


def render_component(component: Path, workdir: Path, resources: tuple[Path, ...] = ()) -> list[dict]:
    """`kubectl kustomize` of a kustomization that lists `resources` and the component, as a
    user's overlay would (kustomize wants relative paths). It sets the webhook's namespace, as
    the base does."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "ecr-token-webhook",
                "resources": [os.path.relpath(r, workdir) for r in resources],
                "components": [os.path.relpath(component, workdir)],
            }
        )
    )
    return kustomize(workdir)


def test_v1_validates_against_1_30_and_the_newest_kubernetes(tmp_path):
    objs = render_component(GUARD, tmp_path)
    assert {o["apiVersion"] for o in objs} == {"admissionregistration.k8s.io/v1"}
    for version in sorted({"1.30", NEWEST}):
        assert schema_errors(objs, version) == []


def test_v1beta1_validates_against_1_28_and_1_29(tmp_path):
    objs = render_component(GUARD_V1BETA1, tmp_path)
    assert {o["apiVersion"] for o in objs} == {"admissionregistration.k8s.io/v1beta1"}
    for version in ("1.28", "1.29"):
        assert schema_errors(objs, version) == []


def test_both_forms_have_the_same_rules():
    v1 = (GUARD / "policy.yaml").read_text()
    beta = (GUARD_V1BETA1 / "policy.yaml").read_text()
    assert "apiVersion: admissionregistration.k8s.io/v1\n" in v1
    assert beta == v1.replace(
        "apiVersion: admissionregistration.k8s.io/v1\n", "apiVersion: admissionregistration.k8s.io/v1beta1\n"
    ), "guard-v1beta1/policy.yaml differs from guard/policy.yaml in more than apiVersion"


def test_policy_and_binding(tmp_path):
    objs = render_component(GUARD, tmp_path)
    assert sorted(o["kind"] for o in objs) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    policy = one(objs, "ValidatingAdmissionPolicy")
    binding = one(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"], "operations": ["CREATE", "UPDATE", "DELETE"]}
    ]
    for v in spec["validations"]:
        assert v["reason"] == "Forbidden" and v["message"]


def test_names_match_the_rest_of_deploy(tmp_path):
    """The identity, the opt-in label, the annotations the webhook writes and the self-managed
    TLS Secret, as the base, the overlay and the binary name them."""
    text = (GUARD / "policy.yaml").read_text()
    base = kustomize(KUSTOMIZE_BASE)
    sa = one(base, "ServiceAccount")
    user = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
    assert f"request.userInfo.username == '{user}'" in text
    assert f"request.namespace == '{sa['metadata']['namespace']}'" in text

    overlay = kustomize(KUSTOMIZE_BASE.parent / "overlays" / "self-managed")
    [cm] = by_kind(overlay, "ConfigMap")
    tls_secret = cm["data"]["ECR_TOKEN_WEBHOOK_TLS_SECRET_NAME"]
    assert f"request.name == '{tls_secret}'" in text

    consts = dict(re.findall(r'pub const ([A-Z_]+): &str = "([^"]+)";', (REPO_ROOT / "src" / "secret" / "mod.rs").read_text()))
    writable = ["TOUCHED_AT_ANNOTATION", "EXPIRES_AT_ANNOTATION", "ERROR_ANNOTATION"]
    assert f"[{', '.join(repr(consts[k]) for k in writable)}]" in text
    assert text.count(f"'{consts['INJECT_LABEL']}'") >= 2


def test_component_adds_to_the_base(tmp_path):
    """Listed under `components:` after the base, the guard adds its two objects and changes
    nothing else."""
    base = kustomize(KUSTOMIZE_BASE)
    both = render_component(GUARD, tmp_path, resources=(KUSTOMIZE_BASE,))
    added = [o for o in both if o not in base]
    assert sorted(o["kind"] for o in added) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    assert len(both) == len(base) + 2
