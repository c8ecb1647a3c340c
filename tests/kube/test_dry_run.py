"""Every object the project ships, as a real API server takes it: a server-side dry-run
(`kubectl apply --server-side --dry-run=server --validate=strict`) of the kustomize base, of every overlay
under deploy/overlays/ (found, not listed, so a new overlay is covered), of the base with the
alerts and dashboard components, and of the Helm chart with default values, with
tls.mode=selfManaged and with test_helm's non-default values (monitoring objects on). Server-side apply with strict field validation
refuses unknown fields; admission, defaulting and cert-manager's CRD schemas (tests/kube/crds) run
as they would on a cluster. Namespaces are created for real first: a dry-run create cannot land
in a namespace that does not exist.

The objects go to kubectl as a YAML stream, not as a `List`: kubectl validates a List on the
client side and stops at the first error, before the server has seen anything."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import pytest

import yaml

from cluster import Cluster
from manifest_checks import KUSTOMIZE_BASE, kustomize
from test_helm import CUSTOM_NAMESPACE, CUSTOM_RELEASE, CUSTOM_VALUES, SELF_MANAGED, render

OVERLAYS_DIR = KUSTOMIZE_BASE.parent / "overlays"
OVERLAYS = sorted(p.parent.name for p in OVERLAYS_DIR.glob("*/kustomization.yaml"))
# Components that add objects to any install (the guard has its own tests in test_guard.py).
MONITORING_COMPONENTS = [KUSTOMIZE_BASE.parent / "components" / c for c in ("alerts", "dashboard")]


def base_with_monitoring() -> list[dict]:
    """deploy/base with the alerts and dashboard components, as a user's overlay lists them."""
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        (work / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [os.path.relpath(KUSTOMIZE_BASE, work)],
                    "components": [os.path.relpath(c, work) for c in MONITORING_COMPONENTS],
                }
            )
        )
        return kustomize(work)


RENDERINGS: dict[str, Callable[[], list[dict]]] = {
    "kustomize-base": lambda: kustomize(KUSTOMIZE_BASE),
    "kustomize-base-with-monitoring": base_with_monitoring,
    **{f"overlay-{name}": (lambda name=name: kustomize(OVERLAYS_DIR / name)) for name in OVERLAYS},
    "helm-defaults": lambda: render(),
    "helm-tls-selfManaged": lambda: render(SELF_MANAGED),
    # test_helm's release that changes every value a user is likely to touch (ServiceMonitor,
    # PrometheusRule and dashboard on).
    "helm-custom-values": lambda: render(CUSTOM_VALUES, name=CUSTOM_RELEASE, namespace=CUSTOM_NAMESPACE),
}


# Warnings the server gives for something the manifests do on purpose: {warning: why}. Any other
# warning (a deprecated API, Pod Security) fails the test like an error.
# Server warnings that are expected, with why (none today: the self-managed TLS Secret ships as
# Opaque with no data, which draws no warning).
EXPECTED_WARNINGS: dict[str, str] = {}


def unexpected(stderr: str) -> list[str]:
    return [
        line for line in stderr.splitlines()
        if line.strip() and line.removeprefix("Warning: ") not in EXPECTED_WARNINGS
    ]


def test_overlays_are_found():
    assert "self-managed" in OVERLAYS, f"overlay discovery found {OVERLAYS}"


def dry_run(cluster: Cluster, objects: list[dict]) -> tuple[int, list[str], str]:
    """(kubectl's exit status, names the server accepted, its stderr: errors and warnings)."""
    namespaces = {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}
    namespaces |= {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    for ns in sorted(namespaces):
        cluster.ensure_namespace(ns)
    proc = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=ecr-token-webhook-tier", "--dry-run=server",
        "--validate=strict", "-o", "name", "-f", "-",
        input=yaml.safe_dump_all(objects), check=False,
    )
    return proc.returncode, proc.stdout.split(), proc.stderr


@pytest.mark.parametrize("rendering", list(RENDERINGS))
def test_server_side_dry_run_accepts_every_object(cluster: Cluster, rendering: str):
    objects = RENDERINGS[rendering]()
    assert objects, f"{rendering} rendered nothing"
    status, accepted, stderr = dry_run(cluster, objects)
    rendered = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    assert status == 0 and not unexpected(stderr) and len(accepted) == len(objects), (
        f"the API server refused objects of {rendering} "
        f"(accepted {len(accepted)} of {len(objects)}: {rendered}):\n{stderr}"
    )
