"""Helpers for the manifest tests: render with kubectl, parse, validate against schemas.

Run from the repository root:  python -m pytest -q tests/manifests
Needs kubectl (its built-in kustomize) on PATH, or KUBECTL=/path/to/kubectl. A missing
kubectl fails the tests; it never skips them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE_BASE = REPO_ROOT / "deploy" / "base"

# Kubernetes versions whose built-in schemas every non-CRD object must satisfy (strict: unknown
# fields are errors): the oldest version the manifests support (the support window stated in
# docs/install.md and the chart's kubeVersion) and the newest schema kubernetes-validate bundles.
OLDEST_SUPPORTED_KUBERNETES = "1.28"
SCHEMA_VERSIONS = sorted(
    {OLDEST_SUPPORTED_KUBERNETES, ".".join(kubernetes_validate.utils.latest_version().split(".")[:2])},
    key=lambda v: tuple(int(p) for p in v.split(".")[:2]),
)

# Kinds defined by CRDs, which have no schema among Kubernetes' own. They are skipped from
# schema validation by this explicit list only (any other kind without a schema is a failure)
# and are checked field by field in the tests instead.
CRD_KINDS_WITHOUT_KUBERNETES_SCHEMA = frozenset(
    {
        ("cert-manager.io/v1", "Issuer"),
        ("cert-manager.io/v1", "ClusterIssuer"),
        ("cert-manager.io/v1", "Certificate"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }
)


def find_kubectl() -> str:
    """The kubectl to run; fails the calling test when there is none."""
    explicit = os.environ.get("KUBECTL")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            pytest.fail(f"KUBECTL={explicit} is not an executable file")
        return explicit
    found = shutil.which("kubectl")
    if not found:
        pytest.fail(
            "kubectl is not on PATH: the manifest tests render deploy/ with `kubectl kustomize` "
            "and need it (set KUBECTL to point at one)"
        )
    return found


def parse_documents(text: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    for d in docs:
        assert isinstance(d, dict), f"not a Kubernetes object: {d!r}"
        assert d.get("apiVersion") and d.get("kind"), f"object without apiVersion/kind: {d!r}"
        assert d.get("metadata", {}).get("name"), f"object without a name: {d!r}"
    return docs


def kustomize(path: Path | str) -> list[dict]:
    """`kubectl kustomize PATH`, parsed into objects."""
    kubectl = find_kubectl()
    proc = subprocess.run(
        [kubectl, "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed ({proc.returncode}):\n{proc.stderr}")
    return parse_documents(proc.stdout)


def kustomize_with_base(overlay: Path, new_base: Path, workdir: Path) -> list[dict]:
    """`overlay` rendered on top of `new_base` instead of ../../base: a copy in `workdir` with
    that one line changed (how the overlays' comments tell users to combine them)."""
    copy = workdir / overlay.name
    shutil.copytree(overlay, copy)
    kustomization = copy / "kustomization.yaml"
    text = kustomization.read_text()
    assert text.count("  - ../../base\n") == 1, f"{overlay} does not list ../../base once"
    kustomization.write_text(text.replace("  - ../../base\n", f"  - {os.path.relpath(new_base, copy)}\n"))
    return kustomize(copy)


def is_crd_kind(obj: dict) -> bool:
    return (obj["apiVersion"], obj["kind"]) in CRD_KINDS_WITHOUT_KUBERNETES_SCHEMA


def schema_errors(objects: list[dict], version: str) -> list[str]:
    """Strict schema validation of every object not on the CRD list; returns the failures."""
    errors = []
    for obj in objects:
        if is_crd_kind(obj):
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{where} against {version}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(
                f"{where}: no Kubernetes {version} schema for {obj['apiVersion']} {obj['kind']}; "
                "if it is a CRD kind, add it to CRD_KINDS_WITHOUT_KUBERNETES_SCHEMA and check "
                "it in the tests"
            )
    return errors


def cli_env_vars() -> set[str]:
    """Every ECR_TOKEN_WEBHOOK_* variable the binary reads, from its flags in src/commands/."""
    text = "\n".join(p.read_text() for p in sorted((REPO_ROOT / "src" / "commands").rglob("*.rs")))
    found = set(re.findall(r'env\s*=\s*"(ECR_TOKEN_WEBHOOK_[A-Z0-9_]+)"', text))
    assert found, "no ECR_TOKEN_WEBHOOK_* variables found in src/commands/"
    return found


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- the webhook's workload, whatever renders it (kustomize or Helm) -----------------------

CONTAINER = "ecr-token-webhook"
NONROOT = 65532


def deployment(objs: list[dict]) -> dict:
    """The one Deployment."""
    return one(objs, "Deployment")


def pod_spec(objs: list[dict]) -> dict:
    return deployment(objs)["spec"]["template"]["spec"]


def container(objs: list[dict]) -> dict:
    containers = pod_spec(objs)["containers"]
    assert [c["name"] for c in containers] == [CONTAINER]
    return containers[0]


def config_map_data(objs: list[dict]) -> dict:
    """The ConfigMap the container takes its environment from (kustomize adds a hash)."""
    refs = [e["configMapRef"]["name"] for e in container(objs).get("envFrom", []) if "configMapRef" in e]
    assert len(refs) == 1
    return one(objs, "ConfigMap", refs[0])["data"]


def rules_as_set(rules: list[dict]) -> set[tuple[str, str, str, str]]:
    """Rules flattened to (apiGroup, resource, resourceName or '', verb) tuples."""
    out = set()
    for r in rules:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for verb in r["verbs"]:
                    for rn in r.get("resourceNames") or [""]:
                        out.add((g, res, rn, verb))
    return out


def assert_pod_security_context_restricted(objs: list[dict], openshift: bool = False) -> None:
    """Pod Security "restricted" at the pod level, and no host namespaces. In OpenShift mode no
    fixed UID, GID or fsGroup: the SCC assigns them."""
    spec = pod_spec(objs)
    sc = spec["securityContext"]
    assert sc["runAsNonRoot"] is True
    if openshift:
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(sc), sc
    else:
        assert sc["runAsUser"] == NONROOT
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host, False)


def assert_container_security_context_restricted(objs: list[dict], openshift: bool = False) -> None:
    sc = container(objs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    if openshift:
        assert not {"runAsUser", "runAsGroup"} & set(sc), sc
    else:
        assert sc["runAsUser"] == NONROOT
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def assert_no_rbac_wildcards_or_escalation(objs: list[dict]) -> None:
    for o in by_kind(objs, "ClusterRole") + by_kind(objs, "Role"):
        assert "aggregationRule" not in o
        for rule in o["rules"]:
            assert "nonResourceURLs" not in rule
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{o['kind']}: wildcard in {field}"
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])


def seconds(duration: str) -> int:
    """A Go-style duration of whole seconds ("5s", "1m30s") as seconds."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert m and duration, f"not a duration in whole seconds: {duration!r}"
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


# Slack between the binary's own shutdown (delay + drain) and the kubelet's SIGKILL.
SHUTDOWN_SLACK_SECONDS = 10


def assert_shutdown_fits_the_grace_period(objs: list[dict]) -> None:
    """The pod keeps serving while it leaves the endpoints without a preStop sleep (which 1.28
    refuses): the binary's shutdown delay does it, and delay + drain grace end well before the
    kubelet's SIGKILL."""
    c = container(objs)
    assert "sleep" not in c.get("lifecycle", {}).get("preStop", {}), "preStop sleep needs Kubernetes 1.30"
    data = config_map_data(objs)
    delay = seconds(data["ECR_TOKEN_WEBHOOK_SHUTDOWN_DELAY"])
    grace = seconds(data["ECR_TOKEN_WEBHOOK_SHUTDOWN_GRACE"])
    assert delay >= 1, "without a delay the pod stops answering while the API server still calls it"
    period = pod_spec(objs)["terminationGracePeriodSeconds"]
    assert delay + grace + SHUTDOWN_SLACK_SECONDS <= period, (delay, grace, period)


def secret_verbs(objs: list[dict]) -> dict[tuple[str, str, str], set[str]]:
    """Every grant on secrets: (Role or ClusterRole, its namespace or '', resourceName or '')
    -> verbs."""
    out: dict[tuple[str, str, str], set[str]] = {}
    for o in by_kind(objs, "ClusterRole") + by_kind(objs, "Role"):
        for g, res, rn, verb in rules_as_set(o["rules"]):
            if g == "" and res == "secrets":
                key = (o["kind"], o["metadata"].get("namespace", ""), rn)
                out.setdefault(key, set()).add(verb)
    return out


def assert_no_create_on_secrets(objs: list[dict]) -> None:
    """The webhook never creates Secrets (the self-managed TLS Secret is shipped), and never
    deletes or watches them."""
    for where, verbs in secret_verbs(objs).items():
        assert not verbs & {"create", "delete", "deletecollection", "watch", "*"}, (where, verbs)


def assert_self_managed_secret_shipped_empty(objs: list[dict], name: str, namespace: str) -> None:
    """The self-managed TLS Secret is in the install, in the webhook's namespace, and names no
    data: a manifest naming tls.crt or tls.key would overwrite the binary's certificate on every
    re-apply (kubectl's three-way merge) or conflict with it (server-side apply)."""
    secret = one(objs, "Secret", name)
    assert secret["metadata"]["namespace"] == namespace
    assert secret["type"] == "Opaque"
    assert not {"data", "stringData", "immutable"} & set(secret), secret
    # The binary may get and update it by name, and nothing else in its namespace.
    grants = {k: v for k, v in secret_verbs(objs).items() if k[1] == namespace}
    assert grants == {("Role", namespace, name): {"get", "update"}}, grants


REFRESHER_RULES = {
    ("", "secrets", "", "list"),  # the label-selected, metadata-only list of opted-in secrets
    ("", "secrets", "", "patch"),  # the one-annotation touch
    ("", "events", "", "create"),  # a Warning Event in the secret's namespace
}


def assert_namespaced_mode(objs: list[dict], namespaces: list[str], role_name: str) -> None:
    """Namespaced mode: no cluster-wide grant on secrets or events; exactly one Role with the
    refresher's rules, bound to the webhook's ServiceAccount, in each listed namespace; the
    refresher lists, and the policy allows, exactly those namespaces."""
    sa = one(objs, "ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
    for cr in by_kind(objs, "ClusterRole"):
        resources = {res for (g, res, _, _) in rules_as_set(cr["rules"]) if g == ""}
        assert not resources & {"secrets", "events"}, f"ClusterRole {cr['metadata']['name']} grants {resources}"
    for rb in by_kind(objs, "RoleBinding"):
        assert rb["roleRef"]["kind"] == "Role", "a ClusterRole bound per namespace is not a Role"
    roles = [r for r in by_kind(objs, "Role") if r["metadata"]["name"] == role_name]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(namespaces)
    for r in roles:
        assert rules_as_set(r["rules"]) == REFRESHER_RULES, r["metadata"]["namespace"]
    bindings = [b for b in by_kind(objs, "RoleBinding") if b["roleRef"]["name"] == role_name]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(namespaces)
    for b in bindings:
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name}
        assert b["subjects"] == [subject], b["metadata"]["namespace"]
    # Secrets are reachable only in the listed namespaces (and, self-managed, one by name in the
    # webhook's own).
    for (kind, ns, name), verbs in secret_verbs(objs).items():
        if name:
            assert kind == "Role" and ns == subject["namespace"] and verbs <= {"get", "update"}, (kind, ns, name, verbs)
        else:
            assert kind == "Role" and ns in namespaces and verbs == {"list", "patch"}, (kind, ns, verbs)
    data = config_map_data(objs)
    assert data["ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES"].split(",") == namespaces
    if "ECR_TOKEN_WEBHOOK_POLICY_FILE" in data:
        # A policy file's rules name the namespaces instead (the chart checks them at render).
        assert "ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES" not in data
    else:
        assert data["ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES"] == data["ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES"]
