"""docs/install.md's RBAC table is what every install variant grants, row for row: each variant's
rendered Roles and ClusterRoles (those bound to the webhook's ServiceAccount) flattened to
(verb, resource, name, where) must equal the table's rows for that variant's installs."""

from __future__ import annotations

import re

import pytest

from manifest_checks import KUSTOMIZE_BASE, REPO_ROOT, config_map_data, kustomize
from test_helm import NAMESPACED, SELF_MANAGED, render

WEBHOOK_NAMESPACE = "ecr-token-webhook"
# Resources a ClusterRole grants in every namespace rather than on the cluster itself.
NAMESPACED_RESOURCES = {"secrets", "events", "leases"}


def readme_table() -> list[dict]:
    text = (REPO_ROOT / "docs" / "install.md").read_text()
    section = text.split("\n## RBAC\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("install", "") or set(cells[0]) <= {"-"}:
            continue
        install, verbs, on, where, _why = cells
        ticked = re.findall(r"`([^`]+)`", on)
        rows.append(
            {
                "install": install.split(" (")[0],
                "verbs": re.findall(r"`([^`]+)`", verbs),
                "resource": ticked[0],
                "name": ticked[1] if " named " in on else "",
                "where": where,
            }
        )
    assert rows, "docs/install.md has no RBAC table under '## RBAC'"
    return rows


def expected(installs: set[str]) -> set[tuple[str, str, str, str]]:
    out = set()
    for row in readme_table():
        if row["install"] in installs:
            for verb in row["verbs"]:
                out.add((verb, row["resource"], row["name"], row["where"]))
    return out


def granted(objs: list[dict]) -> set[tuple[str, str, str, str]]:
    """What the ServiceAccount `ecr-token-webhook` is granted, as table rows."""
    bound_roles: set[tuple[str, str, str]] = set()
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s.get("kind") == "ServiceAccount" and s.get("namespace") == WEBHOOK_NAMESPACE
            for s in b.get("subjects", [])
        ):
            continue
        ref = b["roleRef"]
        bound_roles.add((ref["kind"], b["metadata"].get("namespace", ""), ref["name"]))
    secret_namespaces = set(
        filter(None, config_map_data(objs).get("ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES", "").split(","))
    )
    out = set()
    for role in objs:
        if role["kind"] not in ("Role", "ClusterRole"):
            continue
        ns = role["metadata"].get("namespace", "")
        if (role["kind"], ns if role["kind"] == "Role" else "", role["metadata"]["name"]) not in bound_roles:
            continue
        for rule in role.get("rules", []):
            for res in rule.get("resources", []):
                if role["kind"] == "ClusterRole":
                    where = "every namespace" if res in NAMESPACED_RESOURCES else "cluster"
                elif ns == WEBHOOK_NAMESPACE:
                    where = "webhook namespace"
                else:
                    assert ns in secret_namespaces, f"a Role in {ns}, not a listed namespace"
                    where = "each listed namespace"
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [""]:
                        out.add((verb, res, name, where))
    return out


VARIANTS = {
    "kustomize base": (lambda: kustomize(KUSTOMIZE_BASE), {"every", "cluster-wide"}),
    "kustomize self-managed": (
        lambda: kustomize(KUSTOMIZE_BASE.parent / "overlays" / "self-managed"),
        {"every", "cluster-wide", "self-managed TLS"},
    ),
    "kustomize namespaced": (
        lambda: kustomize(KUSTOMIZE_BASE.parent / "overlays" / "namespaced"),
        {"every", "namespaced"},
    ),
    "chart defaults": (lambda: render(), {"every", "cluster-wide"}),
    "chart selfManaged": (lambda: render(SELF_MANAGED), {"every", "cluster-wide", "self-managed TLS"}),
    "chart namespaced": (lambda: render(NAMESPACED), {"every", "namespaced"}),
    "chart namespaced selfManaged": (
        lambda: render({**NAMESPACED, **SELF_MANAGED}),
        {"every", "namespaced", "self-managed TLS"},
    ),
}


def test_the_table_has_every_install_kind():
    assert {r["install"] for r in readme_table()} == {
        "every",
        "cluster-wide",
        "namespaced",
        "self-managed TLS",
    }


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_install_grants_exactly_what_the_readme_table_says(variant):
    objs, installs = VARIANTS[variant]
    got, want = granted(objs()), expected(installs)
    assert got == want, (
        f"{variant}: granted but not in docs/install.md's table: {sorted(got - want)}; "
        f"in the table but not granted: {sorted(want - got)}"
    )
