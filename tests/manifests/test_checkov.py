"""checkov's Kubernetes checks on every rendered manifest set: the kustomize base, each overlay
(and the namespaced overlay on top of the self-managed one), and the chart with every value set
the Helm tests use. Any failed check fails the test. A check that does not fit is skipped in the
manifest itself (`checkov.io/skipN: CKV_..=reason` on the object), never here.

checkov runs from the same virtualenv as pytest (tests/requirements.txt), once over all the
sets, offline: no download of Prisma Cloud guidelines, no PyPI update check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from manifest_checks import KUSTOMIZE_BASE, kustomize, kustomize_with_base
from test_guard_component import render_component
from test_helm import VALUE_SETS, render
from test_openshift import COMPONENT as OPENSHIFT
from test_openshift import with_component

OVERLAYS = KUSTOMIZE_BASE.parent / "overlays"
POLICY_FILE = KUSTOMIZE_BASE.parent / "components" / "policy-file"
CALLER_AUTH = KUSTOMIZE_BASE.parent / "components" / "caller-auth"
NETWORK_POLICY = KUSTOMIZE_BASE.parent / "components" / "network-policy"


def manifest_sets(workdir: Path) -> dict[str, list[dict]]:
    sets = {
        "kustomize-base": kustomize(KUSTOMIZE_BASE),
        "kustomize-self-managed": kustomize(OVERLAYS / "self-managed"),
        "kustomize-namespaced": kustomize(OVERLAYS / "namespaced"),
        "kustomize-namespaced-on-self-managed": kustomize_with_base(
            OVERLAYS / "namespaced", OVERLAYS / "self-managed", workdir
        ),
        "kustomize-base-with-policy-file": render_component(POLICY_FILE, workdir / "policy-file", (KUSTOMIZE_BASE,)),
        "kustomize-base-with-caller-auth": render_component(CALLER_AUTH, workdir / "caller-auth", (KUSTOMIZE_BASE,)),
        # Where the policy is enabled, checkov's NetworkPolicy check (CKV2_K8S_6) runs and passes.
        "kustomize-base-with-network-policy": render_component(
            NETWORK_POLICY, workdir / "network-policy", (KUSTOMIZE_BASE,)
        ),
        "kustomize-base-with-openshift": render_component(OPENSHIFT, workdir / "openshift", (KUSTOMIZE_BASE,)),
        "kustomize-self-managed-with-openshift": with_component(OVERLAYS / "self-managed", workdir / "openshift-sm"),
    }
    for case, (values, name, namespace) in VALUE_SETS.items():
        sets["helm-" + case.replace(" ", "-")] = render(values, name, namespace)
    return sets


SET_NAMES = [
    "kustomize-base",
    "kustomize-self-managed",
    "kustomize-namespaced",
    "kustomize-namespaced-on-self-managed",
    "kustomize-base-with-policy-file",
    "kustomize-base-with-caller-auth",
    "kustomize-base-with-network-policy",
    "kustomize-base-with-openshift",
    "kustomize-self-managed-with-openshift",
    *("helm-" + case.replace(" ", "-") for case in VALUE_SETS),
]


def checkov_executable() -> str:
    found = Path(sys.executable).with_name("checkov")
    if not found.is_file():
        pytest.fail(
            f"checkov is not installed beside {sys.executable}: install tests/requirements.txt "
            "into the virtualenv that runs pytest (scripts/test.sh does)"
        )
    return str(found)


@pytest.fixture(scope="module")
def checkov_results(tmp_path_factory) -> dict:
    """One checkov run over a directory with one file per manifest set; results by set name."""
    root = tmp_path_factory.mktemp("checkov")
    sets = manifest_sets(tmp_path_factory.mktemp("kustomize"))
    assert sorted(sets) == sorted(SET_NAMES)
    for name, objs in sets.items():
        (root / name).mkdir()
        (root / name / "manifests.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
    env = {
        **os.environ,
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",  # no PyPI call
        "BC_SKIP_MAPPING": "TRUE",  # no Prisma Cloud guideline download
        "CKV_PARSE_ERROR_FAIL": "true",  # an unreadable file fails instead of being skipped
    }
    env.pop("BC_API_KEY", None)
    proc = subprocess.run(
        [checkov_executable(), "--directory", str(root), "--framework", "kubernetes", "--output", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    # 0: nothing failed; 1: failed checks (reported per set below); anything else: checkov broke.
    if proc.returncode not in (0, 1):
        pytest.fail(f"checkov exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    report = json.loads(proc.stdout)
    assert isinstance(report, dict) and report["check_type"] == "kubernetes", proc.stdout[:2000]
    assert report["summary"]["parsing_errors"] == 0, report["results"]["parsing_errors"]

    by_set: dict[str, dict[str, list[dict]]] = {name: {"passed": [], "failed": [], "skipped": []} for name in sets}
    for outcome in ("passed", "failed", "skipped"):
        for check in report["results"][f"{outcome}_checks"]:
            name = Path(check["file_path"]).parts[-2]
            by_set[name][outcome].append(check)
    return by_set


@pytest.mark.parametrize("name", SET_NAMES)
def test_checkov_finds_nothing(checkov_results, name):
    results = checkov_results[name]
    # checkov really looked at this set: the Deployment and RBAC checks ran.
    assert len(results["passed"]) > 50, f"checkov checked little in {name}: {len(results['passed'])} passed"
    failed = [f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in results["failed"]]
    assert not failed, (
        f"checkov failures in {name} (fix the manifest, or skip on the object with "
        "`checkov.io/skipN: ID=reason`):\n" + "\n".join(failed)
    )


@pytest.mark.parametrize("name", ["kustomize-base-with-network-policy", "helm-caller-auth-and-network-policy"])
def test_the_network_policy_check_runs_and_passes_where_the_policy_is_enabled(checkov_results, name):
    passed = {c["check_id"] for c in checkov_results[name]["passed"]}
    skipped = {c["check_id"] for c in checkov_results[name]["skipped"]}
    assert "CKV2_K8S_6" in passed and "CKV2_K8S_6" not in skipped, (passed, skipped)


@pytest.mark.parametrize("name", SET_NAMES)
def test_every_skip_gives_a_reason(checkov_results, name):
    for check in checkov_results[name]["skipped"]:
        reason = check.get("check_result", {}).get("suppress_comment", "")
        assert re.search(r"\w+ \w+ \w+", reason) and reason != "No comment provided", (check["check_id"], reason)


def test_skips_sit_on_the_objects_they_are_about():
    """The skips are annotations in the manifests (reviewed with them), one check per
    annotation, and no check is skipped that checkov does not know."""
    objs = kustomize(OVERLAYS / "self-managed") + render(
        {"aws": {"credentialsSecret": "keys"}, "tls": {"mode": "selfManaged"}}
    )
    skips = {}
    for o in objs:
        for key, value in o["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check_id, _, reason = value.partition("=")
                assert re.fullmatch(r"CKV2?_K8S_\d+", check_id), value
                assert "=" not in reason, f"checkov splits on '=': {value}"
                skips.setdefault(check_id, set()).add(o["kind"])
    assert skips == {
        "CKV_K8S_11": {"Deployment"},  # no CPU limit
        "CKV_K8S_38": {"Deployment"},  # the service account token is used
        "CKV_K8S_43": {"Deployment"},  # the digest is chosen per install
        "CKV_K8S_15": {"Deployment"},  # IfNotPresent
        "CKV2_K8S_6": {"Deployment"},  # no portable NetworkPolicy
        "CKV_K8S_35": {"Deployment"},  # static AWS keys as environment (chart, when set)
        "CKV_K8S_155": {"ClusterRole"},  # the caBundle of its own webhook configuration
    }


def test_skips_the_values_make_unnecessary_are_left_out():
    digest = "sha256:" + "ab" * 32
    annotations = render({"image": {"digest": digest, "pullPolicy": "Always"}})
    [deployment] = [o for o in annotations if o["kind"] == "Deployment"]
    skipped = {v.partition("=")[0] for k, v in deployment["metadata"]["annotations"].items() if k.startswith("checkov.io/")}
    assert not skipped & {"CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_35"}
