"""OpenShift's restricted-v2 SCC on a real node, as far as a plain Kubernetes node can show it:
the pod gets an arbitrary UID from the namespace's range (and that UID as fsGroup), no fixed
GID, and must run, serve and write tokens like that. The process then runs as UID:0, since the
image's /etc/passwd does not know the UID.

Until the OpenShift mode (deploy/components/openshift, issue 24) is on this branch, the test
overlay itself takes out the fixed runAsUser, runAsGroup and fsGroup as that mode will; once the
component is there, the test uses it instead, and only adds what the SCC would assign. The lead
should check after merging that this test picked the component up (its name says which)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checks import assert_all_ready_and_one_leader, assert_token_through_the_pod, installed_for, live_pods
from install import DEPLOY, DEPLOYMENT, SELF_MANAGED, overlay, render_overlay

NS = "node-tier-openshift"
COMPONENT = DEPLOY / "components" / "openshift"
# What restricted-v2 hands a pod: the first UID of the namespace's range (OpenShift's default
# ranges start at 1000000000 in blocks of 10000), as runAsUser and as fsGroup.
UID = 1000650000


def patch(ops: list[dict]) -> dict:
    return {"target": {"kind": "Deployment", "name": DEPLOYMENT}, "patch": json.dumps(ops)}


def scc_patches(with_component: bool) -> list[dict]:
    pod, ctr = "/spec/template/spec/securityContext", "/spec/template/spec/containers/0/securityContext"
    ops = []
    if not with_component:
        # What the OpenShift mode leaves out: no fixed UID, GID or fsGroup.
        ops += [{"op": "remove", "path": f"{pod}/{f}"} for f in ("runAsUser", "runAsGroup", "fsGroup")]
        ops += [{"op": "remove", "path": f"{ctr}/{f}"} for f in ("runAsUser", "runAsGroup")]
    # What the SCC then assigns to the container and the pod.
    ops += [
        {"op": "add", "path": f"{ctr}/runAsUser", "value": UID},
        {"op": "add", "path": f"{pod}/fsGroup", "value": UID},
    ]
    return [patch(ops)]


@pytest.fixture(scope="module")
def with_component() -> bool:
    return COMPONENT.is_dir()


@pytest.fixture(scope="module")
def installed(kubectl, image, ecr, tmp_path_factory, with_component):
    d = tmp_path_factory.mktemp("openshift")
    path = overlay(d, SELF_MANAGED, image, ecr.url, scc_patches(with_component), [COMPONENT] if with_component else None)
    how = "deploy/components/openshift" if with_component else "test overlay without fixed IDs"
    with installed_for(kubectl, render_overlay(kubectl, path), "OpenShift-like, arbitrary UID", NS, f"({how})") as inst:
        yield inst


def process_ids(pod: dict) -> list[tuple[list[str], list[str], list[str]]]:
    """(Uid, Gid, Groups) of the webhook processes in the pod's cgroup, read from /proc (the
    node's containers are processes of this machine, on the kit and on kind alike)."""
    uid = pod["metadata"]["uid"]
    marks = (f"pod{uid}", f"pod{uid.replace('-', '_')}")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "comm").read_text().startswith("ecr-token-webho"):
                continue
            if not any(m in (proc / "cgroup").read_text() for m in marks):
                continue
            status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        found.append((status["Uid"].split(), status["Gid"].split(), status["Groups"].split()))
    return found


def test_the_pods_run_under_an_arbitrary_uid_with_group_0(installed, kubectl, api, ecr, with_component):
    assert_all_ready_and_one_leader(kubectl, api)
    for pod in live_pods(kubectl):
        ids = process_ids(pod)
        assert ids, f"no ecr-token-webhook process found for pod {pod['metadata']['name']}"
        for uids, gids, groups in ids:
            assert set(uids) == {str(UID)}, uids
            assert set(gids) == {"0"}, gids
            assert str(UID) in groups, groups
    assert_token_through_the_pod(kubectl, api, ecr, NS)
