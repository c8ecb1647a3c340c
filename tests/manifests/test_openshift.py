"""OpenShift mode: the kustomize component deploy/components/openshift and the chart's
`openshift.enabled` (or the security.openshift.io/v1 API, which the chart detects) leave the
UID, GID and fsGroup to OpenShift's restricted-v2 SCC, and change nothing else.

`restricted_v2_refusals` is what that SCC checks on a pod (OpenShift 4.11+; its strategies are in
docs/openshift.md): the default install is refused for its fixed UID and fsGroup, the OpenShift
mode is admitted. The real SCC admission runs on OpenShift only; this keeps the manifests within
its rules.

Run from the repository root:  python -m pytest -q tests/manifests/test_openshift.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import helm_python as helm
import pytest
import yaml
from helm_python import _native

from manifest_checks import (
    KUSTOMIZE_BASE,
    NONROOT,
    SCHEMA_VERSIONS,
    assert_container_security_context_restricted,
    assert_pod_security_context_restricted,
    deployment,
    kustomize,
    pod_spec,
    schema_errors,
)
from test_guard_component import render_component
from test_helm import CHART, OPENSHIFT, keyed, render

COMPONENT = KUSTOMIZE_BASE.parent / "components" / "openshift"
OVERLAYS = KUSTOMIZE_BASE.parent / "overlays"
# A namespace's range as OpenShift annotates it (openshift.io/sa.scc.uid-range: 1000680000/10000).
UID_RANGE = range(1000680000, 1000680000 + 10000)
FIXED_IDS = {"runAsUser", "runAsGroup", "fsGroup"}
# The volume types restricted-v2 allows.
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def restricted_v2_refusals(spec: dict) -> list[str]:
    """Why restricted-v2 would refuse this pod spec in a namespace with UID_RANGE: runAsUser
    MustRunAsRange, fsGroup MustRunAs (the range), no host namespaces or ports, no privilege
    escalation, all capabilities dropped (NET_BIND_SERVICE the only one that may be added), the
    runtime/default seccomp profile, the volume types above. A value it would assign is not a
    refusal."""
    out = []
    psc = spec.get("securityContext", {})
    for key in ("runAsUser", "fsGroup"):
        if key in psc and psc[key] not in UID_RANGE:
            out.append(f"pod {key} {psc[key]} is not in the namespace's range")
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            out.append(f"{host} is not allowed")
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"volume {v['name']}: {sorted(kinds)} is not allowed")
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if "runAsUser" in sc and sc["runAsUser"] not in UID_RANGE:
            out.append(f"container {name} runAsUser {sc['runAsUser']} is not in the namespace's range")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"container {name} must set allowPrivilegeEscalation: false")
        if sc.get("privileged"):
            out.append(f"container {name} is privileged")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"container {name} must drop ALL capabilities")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"container {name} adds {caps['add']}")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
        if seccomp.get("type") != "RuntimeDefault":
            out.append(f"container {name} needs the RuntimeDefault seccomp profile")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"container {name} uses a hostPort")
    return out


def with_component(overlay: Path, workdir: Path) -> list[dict]:
    """A copy of `overlay` (its ../../base pointed back at deploy/base) with the component
    added, as a user's copy of the overlay would list it."""
    copy = workdir / overlay.name
    shutil.copytree(overlay, copy)
    k = copy / "kustomization.yaml"
    doc = yaml.safe_load(k.read_text())
    doc["resources"] = [
        os.path.relpath(KUSTOMIZE_BASE, copy) if r == "../../base" else r for r in doc["resources"]
    ]
    doc.setdefault("components", []).append(os.path.relpath(COMPONENT, copy))
    k.write_text(yaml.safe_dump(doc, sort_keys=False))
    return kustomize(copy)


def render_with_api_versions(api_versions: list[str], values: dict | None = None) -> list[dict]:
    """The chart as `helm install` renders it on a cluster that serves `api_versions`
    (`helm template --api-versions`). helm-python-sdk's Chart.render has no parameter for them;
    its native call takes them as Helm's install option api_versions."""
    chart = helm.Chart.load(str(CHART))
    opts = {"name": "ecr-token-webhook", "namespace": "ecr-token-webhook", "is_install": True, "api_versions": api_versions}
    files = json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts)))
    return [d for path, text in sorted(files.items()) if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def kustomize_sets(workdir: Path) -> dict[str, tuple[list[dict], list[dict]]]:
    """Each install without and with the component."""
    return {
        "base": (kustomize(KUSTOMIZE_BASE), render_component(COMPONENT, workdir / "base", (KUSTOMIZE_BASE,))),
        "self-managed": (kustomize(OVERLAYS / "self-managed"), with_component(OVERLAYS / "self-managed", workdir / "sm")),
        "namespaced": (kustomize(OVERLAYS / "namespaced"), with_component(OVERLAYS / "namespaced", workdir / "ns")),
    }


def without_ids(objs: list[dict]) -> dict:
    """The objects keyed, with the fields OpenShift mode may change taken out."""
    out = keyed(objs)
    for (kind, _, _), o in out.items():
        if kind == "Deployment":
            o["metadata"].get("annotations", {}).pop("checkov.io/skip7", None)
            ps = o["spec"]["template"]["spec"]
            for key in FIXED_IDS:
                ps["securityContext"].pop(key, None)
            for c in ps["containers"]:
                for key in FIXED_IDS:
                    c["securityContext"].pop(key, None)
    return out


def assert_openshift_mode(plain: list[dict], openshift: list[dict]) -> None:
    assert restricted_v2_refusals(pod_spec(plain)), "the default install should fix its UID and fsGroup"
    assert restricted_v2_refusals(pod_spec(openshift)) == []
    assert_pod_security_context_restricted(openshift, openshift=True)
    assert_container_security_context_restricted(openshift, openshift=True)
    assert deployment(openshift)["metadata"]["annotations"]["checkov.io/skip7"].startswith("CKV_K8S_40=")
    # Nothing else changes: the same objects, the same settings.
    assert without_ids(openshift) == without_ids(plain)
    for version in SCHEMA_VERSIONS:
        assert schema_errors(openshift, version) == [], version


def test_the_default_install_fixes_the_nonroot_uid():
    spec = pod_spec(kustomize(KUSTOMIZE_BASE))
    assert spec["securityContext"]["runAsUser"] == spec["securityContext"]["fsGroup"] == NONROOT
    assert sorted(restricted_v2_refusals(spec)) == sorted(
        [
            f"pod runAsUser {NONROOT} is not in the namespace's range",
            f"pod fsGroup {NONROOT} is not in the namespace's range",
            f"container ecr-token-webhook runAsUser {NONROOT} is not in the namespace's range",
        ]
    )


def test_the_component_leaves_the_ids_to_the_scc_on_every_install(tmp_path):
    for name, (plain, openshift) in kustomize_sets(tmp_path).items():
        try:
            assert_openshift_mode(plain, openshift)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from e


@pytest.mark.parametrize(
    "how",
    ["value", "api"],
)
def test_the_chart_leaves_the_ids_to_the_scc(how, tmp_path):
    plain = render()
    openshift = render(OPENSHIFT) if how == "value" else render_with_api_versions(["security.openshift.io/v1"])
    assert_openshift_mode(plain, openshift)
    # The chart's OpenShift mode is the component's.
    key = ("Deployment", "ecr-token-webhook", "ecr-token-webhook")
    component = render_component(COMPONENT, tmp_path, (KUSTOMIZE_BASE,))
    assert keyed(openshift)[key] == keyed(component)[key]


def test_the_chart_stays_plain_where_openshift_is_not_served():
    objs = render_with_api_versions(["apps/v1", "monitoring.coreos.com/v1"])
    assert keyed(objs) == keyed(render())
    assert pod_spec(objs)["securityContext"]["runAsUser"] == NONROOT


def test_the_docs_name_the_component_and_the_value():
    text = (KUSTOMIZE_BASE.parents[1] / "docs" / "openshift.md").read_text()
    for needed in ("components/openshift", "openshift.enabled", "restricted-v2", "ProjectRequest", "project-request"):
        assert needed in text, needed
    readme = (KUSTOMIZE_BASE.parents[1] / "README.md").read_text()
    assert "docs/openshift.md" in readme
