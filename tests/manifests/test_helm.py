"""deploy/helm/ecr-token-webhook, rendered offline with Helm's own SDK (helm-python-sdk):
lint, values schema, Kubernetes schemas, equivalence with the kustomize install, and that names,
values and security settings come out right for default and non-default values."""

from __future__ import annotations

import copy
import re
import shlex

import helm_python as helm
import pytest
import yaml
from helm_python.errors import HelmError

from manifest_checks import (
    KUSTOMIZE_BASE,
    REPO_ROOT,
    OLDEST_SUPPORTED_KUBERNETES,
    REFRESHER_RULES,
    SCHEMA_VERSIONS,
    assert_container_security_context_restricted,
    assert_namespaced_mode,
    assert_no_create_on_secrets,
    assert_no_rbac_wildcards_or_escalation,
    assert_pod_security_context_restricted,
    assert_self_managed_secret_shipped_empty,
    assert_shutdown_fits_the_grace_period,
    by_kind,
    cli_env_vars,
    config_map_data,
    container,
    deployment,
    is_crd_kind,
    kustomize,
    one,
    parse_documents,
    pod_spec,
    rules_as_set,
    schema_errors,
)
from test_kustomize import CLUSTER_SCOPED

CHART = REPO_ROOT / "deploy" / "helm" / "ecr-token-webhook"
OVERLAY = KUSTOMIZE_BASE.parent / "overlays" / "self-managed"
# Lint (which renders the templates with these capabilities) at the oldest supported and the
# newest Kubernetes. The templates never read .Capabilities (test below), so the offline
# rendering the other tests check is what every supported cluster gets.
KUBE_VERSIONS = [f"v{v}.0" for v in SCHEMA_VERSIONS]

# A release that changes every value a user is likely to touch.
CUSTOM_RELEASE, CUSTOM_NAMESPACE = "platform", "tools"
CUSTOM_FULLNAME = "platform-ecr-token-webhook"
CUSTOM_VALUES = {
    "image": {"repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ecr-token-webhook", "tag": "1.2.3"},
    "imagePullSecrets": [{"name": "ecr-pull"}],
    "replicaCount": 3,
    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    "serviceAccount": {"annotations": {"example.com/owner": "platform"}},
    "aws": {
        "roleArn": "arn:aws:iam::123456789012:role/ecr-token-webhook",
        "credentialsSecret": "ecr-token-webhook-aws",
        "region": "eu-west-1",
    },
    "policy": {
        "allowedNamespaces": ["argocd", "team-*"],
        "allowedRegistries": ["123456789012:eu-*", "210987654321"],
        "allowedRoleArns": ["arn:aws:iam::210987654321:role/ecr-*"],
    },
    "failureMode": "closed",
    "refreshMargin": "4h",
    "refreshInterval": "2m",
    "touchQps": 2.5,
    "shutdownDelaySeconds": 10,
    "logFormat": "text",
    "logLevel": "debug",
    "extraEnv": [{"name": "ECR_TOKEN_WEBHOOK_ECR_BACKOFF", "value": "5s"}],
    "webhook": {"timeoutSeconds": 8, "failurePolicy": "Fail", "excludeNamespaces": ["legacy", "sandbox"]},
    "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}, "alertLabels": {"team": "platform"}},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Platform"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}],
    "podAnnotations": {"example.com/team": "platform"},
    "priorityClassName": "system-cluster-critical",
}
SELF_MANAGED = {"tls": {"mode": "selfManaged"}}
OPENSHIFT = {"openshift": {"enabled": True}}
NAMESPACED_OVERLAY = KUSTOMIZE_BASE.parent / "overlays" / "namespaced"
NAMESPACED = {"rbac": {"namespaced": True, "secretNamespaces": ["argocd", "apps"]}}
# Namespaced mode with everything else non-default: the policy's namespaces come from
# rbac.secretNamespaces, so the custom policy.allowedNamespaces is left out.
NAMESPACED_CUSTOM = {
    **CUSTOM_VALUES,
    **SELF_MANAGED,
    # A pinned image pulled Always: the chart then leaves out checkov's skips for both.
    "image": {**CUSTOM_VALUES["image"], "digest": "sha256:" + "cd" * 32, "pullPolicy": "Always"},
    "policy": {k: v for k, v in CUSTOM_VALUES["policy"].items() if k != "allowedNamespaces"},
    "rbac": {"namespaced": True, "secretNamespaces": ["argocd", "team-a", "team-b"]},
}
CALLER_AUTH = {
    "callerAuth": {"enabled": True},
    "networkPolicy": {"enabled": True, "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}]},
}


# --- helpers -------------------------------------------------------------------------------


def render_files(values=None, name="ecr-token-webhook", namespace="ecr-token-webhook") -> dict[str, str]:
    """The chart rendered as `helm install` would: {template path: text}."""
    chart = helm.Chart.load(str(CHART))
    return chart.render(values or {}, name=name, namespace=namespace, is_install=True)


def render(values=None, name="ecr-token-webhook", namespace="ecr-token-webhook") -> list[dict]:
    files = render_files(values, name, namespace)
    objects = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml"):
            objects += parse_documents(text)
    return objects


def notes(values=None, **kw) -> str:
    files = render_files(values, **kw)
    [path] = [p for p in files if p.endswith("NOTES.txt")]
    return files[path]


def normalized(obj: dict) -> dict:
    """What must be identical between the chart and kustomize: everything except labels,
    selectors (the chart adds app.kubernetes.io/instance), non-functional annotations and the
    kustomize ConfigMap hash suffix."""
    o = copy.deepcopy(obj)
    meta = o["metadata"]
    meta.pop("labels", None)
    # cert-manager's and checkov's annotations work the same from either install.
    kept = {
        k: v
        for k, v in meta.pop("annotations", {}).items()
        if k == "cert-manager.io/inject-ca-from" or k.startswith("checkov.io/")
    }
    if kept:
        meta["annotations"] = kept
    if o["kind"] == "ConfigMap":
        meta["name"] = re.sub(r"-[a-z0-9]{10}$", "", meta["name"])
    spec = o.get("spec", {})
    if o["kind"] in {"Deployment", "PodDisruptionBudget", "Service"}:
        spec.pop("selector", None)
    if o["kind"] == "Deployment":
        spec["template"].pop("metadata", None)
        ps = spec["template"]["spec"]
        for c in ps.get("topologySpreadConstraints", []):
            c.pop("labelSelector", None)
        for c in ps["containers"]:
            for e in c.get("envFrom", []):
                if "configMapRef" in e:
                    e["configMapRef"]["name"] = re.sub(r"-[a-z0-9]{10}$", "", e["configMapRef"]["name"])
    return o


def keyed(objs):
    return {(o["kind"], o["metadata"].get("namespace"), normalized(o)["metadata"]["name"]): normalized(o) for o in objs}


def lint_problems(values) -> list[str]:
    problems = []
    for kube_version in KUBE_VERSIONS:
        report = helm.lint(str(CHART), values, strict=True, kube_version=kube_version)
        problems += [f"{kube_version}: {e}" for e in report["errors"]]
        # Severity 1 is informational ("icon is recommended"); warnings and errors are problems.
        problems += [f"{kube_version}: {m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return problems


@pytest.fixture(scope="module")
def default_objs():
    return render()


@pytest.fixture(scope="module")
def custom_objs():
    return render(CUSTOM_VALUES, name=CUSTOM_RELEASE, namespace=CUSTOM_NAMESPACE)


@pytest.fixture(scope="module")
def self_managed_objs():
    return render(SELF_MANAGED)


# Per-namespace policy rules (policy.rules), rendered into a mounted policy file.
POLICY_RULES = [
    {"name": "argocd", "namespaces": ["argocd"], "registries": ["*"], "roleArns": ["*"]},
    {
        "name": "team-a",
        "namespaces": ["apps"],
        "namespaceSelector": {"matchLabels": {"example.com/team": "team-a"}},
        "registries": ["111111111111", "public"],
        "defaultRole": "arn:aws:iam::111111111111:role/team-a-ecr-pull",
    },
]

VALUE_SETS = {
    "defaults": ({}, "ecr-token-webhook", "ecr-token-webhook"),
    "policy rules": ({"policy": {"rules": POLICY_RULES}}, "ecr-token-webhook", "ecr-token-webhook"),
    "namespaced policy rules": (
        {**NAMESPACED, **SELF_MANAGED, "policy": {"rules": POLICY_RULES}},
        "ecr-token-webhook",
        "ecr-token-webhook",
    ),
    "custom": (CUSTOM_VALUES, CUSTOM_RELEASE, CUSTOM_NAMESPACE),
    "self-managed": (SELF_MANAGED, "ecr-token-webhook", "ecr-token-webhook"),
    "self-managed custom": ({**CUSTOM_VALUES, **SELF_MANAGED}, CUSTOM_RELEASE, CUSTOM_NAMESPACE),
    "namespaced": (NAMESPACED, "ecr-token-webhook", "ecr-token-webhook"),
    "namespaced self-managed custom": (NAMESPACED_CUSTOM, CUSTOM_RELEASE, CUSTOM_NAMESPACE),
    # Caller authentication and the network fence (test_caller_auth_manifests.py).
    "caller auth and network policy": (CALLER_AUTH, CUSTOM_RELEASE, CUSTOM_NAMESPACE),
    "caller auth self-managed": (
        {**SELF_MANAGED, "callerAuth": {"enabled": True, "caSecret": "apiserver-ca", "clientNames": ["a", "b"]}},
        "ecr-token-webhook",
        "ecr-token-webhook",
    ),
    "openshift": (OPENSHIFT, "ecr-token-webhook", "ecr-token-webhook"),
    "openshift self-managed custom": ({**CUSTOM_VALUES, **SELF_MANAGED, **OPENSHIFT}, CUSTOM_RELEASE, CUSTOM_NAMESPACE),
}


# --- lint, values schema, Kubernetes schemas -----------------------------------------------


@pytest.mark.parametrize("case", VALUE_SETS)
def test_lint_is_clean(case):
    values, _, _ = VALUE_SETS[case]
    assert lint_problems(values) == []


@pytest.mark.parametrize("case", VALUE_SETS)
@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_rendered_objects_validate_against_kubernetes_schemas(case, version):
    values, name, namespace = VALUE_SETS[case]
    errors = schema_errors(render(values, name, namespace), version)
    assert not errors, "\n".join(errors)


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "ecr-token-webhook"
    cargo_version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO_ROOT / "Cargo.toml").read_text(), re.M)
    assert cargo_version and chart["appVersion"] == cargo_version.group(1)
    # The support window's oldest version, as docs/install.md says; "-0" admits vendor builds.
    assert chart["kubeVersion"] == f">={OLDEST_SUPPORTED_KUBERNETES}.0-0"


# The one question the chart asks the cluster: is it OpenShift (tests/manifests/test_openshift.py
# renders both answers).
OPENSHIFT_CAPABILITY = '.Capabilities.APIVersions.Has "security.openshift.io/v1"'


def test_templates_do_not_depend_on_the_cluster_version():
    """No .Capabilities but the OpenShift API's: what the offline rendering gives (validated
    against the oldest and the newest schemas) is what `helm install` renders on any supported
    cluster that is not OpenShift."""
    for path in (CHART / "templates").iterdir():
        text = path.read_text()
        if path.name == "deployment.yaml":
            assert text.count(OPENSHIFT_CAPABILITY) == 1, path.name
            text = text.replace(OPENSHIFT_CAPABILITY, "")
        assert ".Capabilities" not in text, path.name


@pytest.mark.parametrize(
    "values,complaint",
    [
        ({"failureMode": "maybe"}, "/failureMode"),
        ({"refreshMargin": "6 hours"}, "/refreshMargin"),
        ({"refreshInterval": 60}, "/refreshInterval"),
        ({"touchQps": 0}, "/touchQps"),
        ({"shutdownDelaySeconds": "5s"}, "/shutdownDelaySeconds"),
        ({"shutdownDelaySeconds": 61}, "/shutdownDelaySeconds"),
        ({"tls": {"mode": "manual"}}, "/tls/mode"),
        ({"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
        ({"webhook": {"failurePolicy": "ignore"}}, "/webhook/failurePolicy"),
        ({"webhook": {"excludeNamespaces": ["Not_A_Namespace"]}}, "/webhook/excludeNamespaces"),
        ({"replicaCount": 0}, "/replicaCount"),
        ({"aws": {"roleArn": "my-role"}}, "/aws/roleArn"),
        ({"policy": {"allowedNamespaces": ["a,b"]}}, "/policy/allowedNamespaces"),
        ({"policy": {"allowedRegistries": []}}, "/policy/allowedRegistries"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"rbac": {"namespaced": True}}, "/rbac/secretNamespaces"),
        ({"rbac": {"namespaced": True, "secretNamespaces": []}}, "/rbac/secretNamespaces"),
        ({"rbac": {"namespaced": True, "secretNamespaces": ["kube-system"]}}, "/rbac/secretNamespaces/0"),
        ({"rbac": {"namespaced": True, "secretNamespaces": ["team-*"]}}, "/rbac/secretNamespaces/0"),
        ({"rbac": {"namespaced": True, "secretNamespaces": ["argocd", "argocd"]}}, "/rbac/secretNamespaces"),
        ({"rbac": {"namespaced": "yes"}}, "/rbac/namespaced"),
        ({"prometheusRule": {"certificateExpiryDays": 0}}, "/prometheusRule/certificateExpiryDays"),
        ({"prometheusRule": {"tokenExpirySeconds": "1h"}}, "/prometheusRule/tokenExpirySeconds"),
        ({"prometheusRule": {"runbookUrl": "docs/runbook.md"}}, "/prometheusRule/runbookUrl"),
        ({"prometheusRule": {"runbookUrl": "https://example.com/runbook.md#top"}}, "/prometheusRule/runbookUrl"),
        ({"grafanaDashboard": {"folder": "x"}}, "folder"),
        ({"refreshMagrin": "6h"}, "refreshMagrin"),
        ({"webhook": {"timeout": 5}}, "timeout"),
    ],
)
def test_values_schema_refuses_bad_values(values, complaint):
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(HelmError) as err:
        chart.validate_schema(values)
    assert complaint in str(err.value)
    # And so does an install: the schema is not advisory.
    with pytest.raises(HelmError):
        render_files(values)


@pytest.mark.parametrize("case", VALUE_SETS)
def test_values_schema_accepts_the_values_used_here(case):
    helm.Chart.load(str(CHART)).validate_schema(VALUE_SETS[case][0])


def test_every_value_in_values_yaml_is_in_the_schema():
    """values.yaml and values.schema.json describe the same keys (the schema refuses unknown ones,
    so a key missing from it would make the chart refuse its own defaults)."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(vals, sch, path):
        props = sch.get("properties")
        if props is None or not isinstance(vals, dict):
            return
        for key, v in vals.items():
            assert key in props, f"{path}{key} is in values.yaml but not in values.schema.json"
            walk(v, props[key], f"{path}{key}.")
        for key in props:
            if key != "global":
                assert key in vals, f"{path}{key} is in values.schema.json but not in values.yaml"

    walk(values, schema, "")


# --- the same install as kustomize ---------------------------------------------------------


def test_defaults_render_what_the_kustomize_base_renders(default_objs):
    """With default values the chart installs the base's objects with the same settings, so the
    base's tests (security, RBAC, webhook, certificates) hold for the chart too. The chart leaves
    the Namespace to `helm install --create-namespace` and to the user's labels."""
    base = {k: v for k, v in keyed(kustomize(KUSTOMIZE_BASE)).items() if k[0] != "Namespace"}
    chart = keyed(default_objs)
    assert set(chart) == set(base)
    for key in base:
        assert chart[key] == base[key], f"{key} differs from deploy/base"


def test_self_managed_renders_what_the_kustomize_overlay_renders(self_managed_objs):
    overlay = {k: v for k, v in keyed(kustomize(OVERLAY)).items() if k[0] != "Namespace"}
    chart = keyed(self_managed_objs)
    assert set(chart) == set(overlay)
    for key in overlay:
        assert chart[key] == overlay[key], f"{key} differs from deploy/overlays/self-managed"


def test_namespaced_renders_what_the_kustomize_overlay_renders():
    """rbac.namespaced with the overlay's example namespaces installs the overlay's objects."""
    overlay = {k: v for k, v in keyed(kustomize(NAMESPACED_OVERLAY)).items() if k[0] != "Namespace"}
    chart = keyed(render(NAMESPACED))
    assert set(chart) == set(overlay)
    for key in overlay:
        assert chart[key] == overlay[key], f"{key} differs from deploy/overlays/namespaced"


# --- names that must agree -----------------------------------------------------------------


@pytest.mark.parametrize("case", VALUE_SETS)
def test_every_object_is_in_the_release_namespace_with_the_release_labels(case):
    values, name, namespace = VALUE_SETS[case]
    # Namespaced mode puts the refresher's Role and RoleBinding into each listed namespace.
    elsewhere = set(values.get("rbac", {}).get("secretNamespaces", [])) if values.get("rbac", {}).get("namespaced") else set()
    for o in render(values, name, namespace):
        ns = o["metadata"].get("namespace")
        if o["kind"] in CLUSTER_SCOPED:
            assert ns is None, f"{o['kind']} is cluster-scoped"
        elif o["kind"] in {"Role", "RoleBinding"} and o["metadata"]["name"].endswith("-refresher"):
            assert ns in elsewhere, f"{o['kind']}/{o['metadata']['name']} in {ns!r}"
        else:
            assert ns == namespace, f"{o['kind']}/{o['metadata']['name']} in {ns!r}"
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == name
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("case", VALUE_SETS)
def test_names_the_binary_uses_are_the_names_rbac_grants(case):
    values, name, namespace = VALUE_SETS[case]
    objs = render(values, name, namespace)
    fullname = CUSTOM_FULLNAME if name == CUSTOM_RELEASE else "ecr-token-webhook"
    data = config_map_data(objs)
    sa = one(objs, "ServiceAccount")["metadata"]["name"]
    assert pod_spec(objs)["serviceAccountName"] == sa
    for binding in by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]
        # The role it names exists, in the binding's namespace for a Role.
        same_scope = [o for o in objs if o["metadata"].get("namespace") == binding["metadata"].get("namespace")]
        one(same_scope if binding["roleRef"]["kind"] == "Role" else objs, binding["roleRef"]["kind"], binding["roleRef"]["name"])

    lease_rules = rules_as_set(one(objs, "Role", fullname)["rules"])
    assert lease_rules == {
        ("coordination.k8s.io", "leases", "", "create"),
        ("coordination.k8s.io", "leases", data["ECR_TOKEN_WEBHOOK_LEASE_NAME"], "get"),
        ("coordination.k8s.io", "leases", data["ECR_TOKEN_WEBHOOK_LEASE_NAME"], "update"),
    }
    namespaced = values.get("rbac", {}).get("namespaced", False)
    if namespaced:
        assert_namespaced_mode(objs, values["rbac"]["secretNamespaces"], f"{fullname}-refresher")
        assert not [o for o in by_kind(objs, "ClusterRole") if o["metadata"]["name"] == fullname]
    else:
        assert rules_as_set(one(objs, "ClusterRole", fullname)["rules"]) == REFRESHER_RULES
        assert "ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES" not in data, "empty: all namespaces"

    mwc = one(objs, "MutatingWebhookConfiguration")
    service = one(objs, "Service")
    [hook] = mwc["webhooks"]
    assert hook["clientConfig"]["service"] == {"name": service["metadata"]["name"], "namespace": namespace, "path": "/mutate", "port": 443}
    # The Service selects the Deployment's pods.
    pod_labels = deployment(objs)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment(objs)["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]

    if values.get("tls", {}).get("mode") == "selfManaged":
        assert data["ECR_TOKEN_WEBHOOK_TLS_SELF_MANAGED"] == "true"
        assert data["ECR_TOKEN_WEBHOOK_WEBHOOK_CONFIG_NAME"] == mwc["metadata"]["name"]
        assert data["ECR_TOKEN_WEBHOOK_SERVICE"] == service["metadata"]["name"]
        secret = data["ECR_TOKEN_WEBHOOK_TLS_SECRET_NAME"]
        assert rules_as_set(one(objs, "Role", f"{fullname}-self-managed")["rules"]) == {
            ("", "secrets", secret, "get"),
            ("", "secrets", secret, "update"),
        }
        assert_self_managed_secret_shipped_empty(objs, secret, namespace)
        assert rules_as_set(one(objs, "ClusterRole", f"{fullname}-self-managed")["rules"]) == {
            ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", mwc["metadata"]["name"], "get"),
            ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", mwc["metadata"]["name"], "patch"),
        }
        assert not [o for o in objs if o["apiVersion"].startswith("cert-manager.io/")]
        assert "annotations" not in mwc["metadata"] or "cert-manager.io/inject-ca-from" not in mwc["metadata"]["annotations"]
        assert container(objs)["args"] == ["serve"]
        # No TLS mount (the policy file's and the client CA's are the only ones there may be).
        mine = ("policy", "client-ca")
        assert [v["name"] for v in pod_spec(objs).get("volumes", []) if v["name"] not in mine] == []
        assert [m["name"] for m in container(objs).get("volumeMounts", []) if m["name"] not in mine] == []
    else:
        serving = one(objs, "Certificate", f"{fullname}-serving")
        svc = f"{service['metadata']['name']}.{namespace}.svc"
        assert serving["spec"]["dnsNames"] == [svc, f"{svc}.cluster.local"]
        assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{namespace}/{fullname}-serving"
        [volume] = [v for v in pod_spec(objs)["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == serving["spec"]["secretName"]
        assert serving["spec"]["issuerRef"]["name"] == f"{fullname}-ca"
        ca = one(objs, "Certificate", f"{fullname}-ca")
        assert one(objs, "Issuer", f"{fullname}-ca")["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
        assert ca["spec"]["issuerRef"]["name"] == f"{fullname}-selfsigned"
        assert container(objs)["args"] == ["serve", "--tls-cert-file", "/tls/tls.crt", "--tls-key-file", "/tls/tls.key"]
        assert not [o for o in objs if o["metadata"]["name"].endswith("-self-managed")]
        assert not by_kind(objs, "Secret"), "cert-manager writes the serving Secret"


@pytest.mark.parametrize("case", VALUE_SETS)
def test_webhook_never_sits_in_front_of_kube_system_or_its_own_namespace(case):
    values, name, namespace = VALUE_SETS[case]
    [hook] = one(render(values, name, namespace), "MutatingWebhookConfiguration")["webhooks"]
    [expr] = hook["namespaceSelector"]["matchExpressions"]
    assert expr["key"] == "kubernetes.io/metadata.name" and expr["operator"] == "NotIn"
    want = ["kube-system", namespace] + values.get("webhook", {}).get("excludeNamespaces", [])
    assert expr["values"] == want
    assert hook["objectSelector"] == {"matchLabels": {"ecr-token-webhook/inject": "true"}}
    assert hook["rules"] == [
        {"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"], "scope": "Namespaced"}
    ]
    assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
    assert hook["matchPolicy"] == "Equivalent"
    assert "caBundle" not in hook["clientConfig"], "Helm must not overwrite the injected caBundle"


# --- security whatever the values ----------------------------------------------------------


@pytest.mark.parametrize("case", VALUE_SETS)
def test_pod_security_is_restricted_whatever_the_values(case):
    values, name, namespace = VALUE_SETS[case]
    objs = render(values, name, namespace)
    openshift = values.get("openshift", {}).get("enabled", False)
    assert_pod_security_context_restricted(objs, openshift)
    assert_container_security_context_restricted(objs, openshift)
    ps = pod_spec(objs)
    res = container(objs)["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
    for v in ps.get("volumes", []):
        assert set(v) - {"name"} <= {"secret", "projected", "configMap"}, v
        if "secret" in v:
            assert v["secret"]["defaultMode"] & 0o007 == 0
    assert_no_rbac_wildcards_or_escalation(objs)
    assert_no_create_on_secrets(objs)
    # Shutdown fits the grace period; probes on the metrics port.
    c = container(objs)
    assert_shutdown_fits_the_grace_period(objs)
    assert "lifecycle" not in c
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


@pytest.mark.parametrize("case", VALUE_SETS)
def test_environment_names_only_variables_the_binary_reads(case):
    values, name, namespace = VALUE_SETS[case]
    objs = render(values, name, namespace)
    known = cli_env_vars()
    for key in config_map_data(objs):
        assert key in known, f"{key} is not read by the binary (src/commands/)"
    for e in container(objs)["env"]:
        assert e["name"] in known | {"POD_NAME", "POD_NAMESPACE", "AWS_REGION"}, e["name"]


# --- values reach the objects --------------------------------------------------------------


def test_custom_values_reach_the_binary(custom_objs):
    data = config_map_data(custom_objs)
    assert data["ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES"] == "argocd,team-*"
    assert data["ECR_TOKEN_WEBHOOK_ALLOWED_REGISTRIES"] == "123456789012:eu-*,210987654321"
    assert data["ECR_TOKEN_WEBHOOK_ALLOWED_ROLE_ARNS"] == "arn:aws:iam::210987654321:role/ecr-*"
    assert data["ECR_TOKEN_WEBHOOK_FAILURE_MODE"] == "closed"
    assert data["ECR_TOKEN_WEBHOOK_REFRESH_MARGIN"] == "4h"
    assert data["ECR_TOKEN_WEBHOOK_REFRESH_INTERVAL"] == "2m"
    assert data["ECR_TOKEN_WEBHOOK_TOUCH_QPS"] == "2.5"
    assert data["ECR_TOKEN_WEBHOOK_LOG_FORMAT"] == "text"
    assert data["ECR_TOKEN_WEBHOOK_LOG_LEVEL"] == "debug"
    assert data["ECR_TOKEN_WEBHOOK_LEASE_NAME"] == CUSTOM_FULLNAME
    c = container(custom_objs)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["ECR_TOKEN_WEBHOOK_ECR_BACKOFF"] == "5s"
    assert {"secretRef": {"name": "ecr-token-webhook-aws"}} in c["envFrom"]


def test_defaults_leave_out_what_is_not_set(default_objs):
    data = config_map_data(default_objs)
    # An empty list would reach the binary as one empty pattern.
    assert "ECR_TOKEN_WEBHOOK_ALLOWED_ROLE_ARNS" not in data
    sa = one(default_objs, "ServiceAccount")
    assert "annotations" not in sa["metadata"], "no IRSA annotation without aws.roleArn"
    c = container(default_objs)
    assert [e["name"] for e in c["env"]] == ["POD_NAME", "POD_NAMESPACE"]
    assert [list(e) for e in c["envFrom"]] == [["configMapRef"]]
    assert not by_kind(default_objs, "ServiceMonitor")


def test_custom_values_reach_the_objects(custom_objs):
    sa = one(custom_objs, "ServiceAccount", CUSTOM_FULLNAME)
    assert sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ecr-token-webhook",
        "example.com/owner": "platform",
    }
    d = deployment(custom_objs)
    assert d["spec"]["replicas"] == 3
    ps = pod_spec(custom_objs)
    assert ps["imagePullSecrets"] == [{"name": "ecr-pull"}]
    assert ps["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert ps["tolerations"][0]["key"] == "dedicated"
    assert ps["priorityClassName"] == "system-cluster-critical"
    assert d["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "platform"
    c = container(custom_objs)
    assert c["image"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ecr-token-webhook:1.2.3"
    assert c["resources"] == CUSTOM_VALUES["resources"]
    [hook] = one(custom_objs, "MutatingWebhookConfiguration", CUSTOM_FULLNAME)["webhooks"]
    assert hook["timeoutSeconds"] == 8 and hook["failurePolicy"] == "Fail"
    assert one(custom_objs, "PodDisruptionBudget", CUSTOM_FULLNAME)["spec"]["minAvailable"] == 1


def test_image_digest_pins_the_image():
    digest = "sha256:" + "ab" * 32
    objs = render({"image": {"repository": "registry.example/ecr-token-webhook", "digest": digest}})
    assert container(objs)["image"] == f"registry.example/ecr-token-webhook@{digest}"


def test_service_monitor_scrapes_the_metrics_port(custom_objs):
    sm = one(custom_objs, "ServiceMonitor", CUSTOM_FULLNAME)
    assert is_crd_kind(sm)
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    service = one(custom_objs, "Service", CUSTOM_FULLNAME)
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [CUSTOM_NAMESPACE]}
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s"}
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_shutdown_delay_sets_the_grace_period(default_objs):
    assert config_map_data(default_objs)["ECR_TOKEN_WEBHOOK_SHUTDOWN_DELAY"] == "5s"
    assert pod_spec(default_objs)["terminationGracePeriodSeconds"] == 30
    objs = render({"shutdownDelaySeconds": 20})
    assert config_map_data(objs)["ECR_TOKEN_WEBHOOK_SHUTDOWN_DELAY"] == "20s"
    assert pod_spec(objs)["terminationGracePeriodSeconds"] == 45
    assert_shutdown_fits_the_grace_period(objs)


def test_a_renamed_self_managed_secret_is_the_one_shipped_granted_and_used():
    objs = render({"tls": {"mode": "selfManaged", "selfManaged": {"secretName": "webhook-tls"}}})
    assert config_map_data(objs)["ECR_TOKEN_WEBHOOK_TLS_SECRET_NAME"] == "webhook-tls"
    assert_self_managed_secret_shipped_empty(objs, "webhook-tls", "ecr-token-webhook")


def test_namespaced_mode_takes_the_policy_namespaces_from_the_list():
    """The webhook must not hand tokens to namespaces the refresher does not cover: a separate
    policy.allowedNamespaces is refused rather than silently combined."""
    with pytest.raises(HelmError) as err:
        render({**NAMESPACED, "policy": {"allowedNamespaces": ["team-*"]}})
    assert "leave policy.allowedNamespaces at its default" in str(err.value)
    objs = render(NAMESPACED_CUSTOM, name=CUSTOM_RELEASE, namespace=CUSTOM_NAMESPACE)
    data = config_map_data(objs)
    assert data["ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES"] == "argocd,team-a,team-b"
    assert data["ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES"] == "argocd,team-a,team-b"
    # The rest of the custom values still reach the binary.
    assert data["ECR_TOKEN_WEBHOOK_ALLOWED_REGISTRIES"] == "123456789012:eu-*,210987654321"


def test_namespaced_mode_combines_with_self_managed_tls():
    objs = render(NAMESPACED_CUSTOM, name=CUSTOM_RELEASE, namespace=CUSTOM_NAMESPACE)
    assert_namespaced_mode(objs, ["argocd", "team-a", "team-b"], f"{CUSTOM_FULLNAME}-refresher")
    data = config_map_data(objs)
    assert data["ECR_TOKEN_WEBHOOK_TLS_SELF_MANAGED"] == "true"
    assert_self_managed_secret_shipped_empty(objs, data["ECR_TOKEN_WEBHOOK_TLS_SECRET_NAME"], CUSTOM_NAMESPACE)
    mwc = one(objs, "MutatingWebhookConfiguration")["metadata"]["name"]
    assert rules_as_set(one(objs, "ClusterRole", f"{CUSTOM_FULLNAME}-self-managed")["rules"]) == {
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", mwc, "get"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", mwc, "patch"),
    }


def test_notes_name_the_namespaced_mode():
    assert "Namespaced mode: tokens go only to secrets in argocd, apps." in notes(NAMESPACED)
    assert "Namespaced mode" not in notes()


def test_a_single_replica_gets_no_disruption_budget():
    # minAvailable 1 with one replica would block every node drain.
    assert not by_kind(render({"replicaCount": 1}), "PodDisruptionBudget")
    assert not by_kind(render({"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget")


def test_custom_topology_spread_replaces_the_default():
    constraint = {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
    objs = render({"topologySpreadConstraints": [constraint]})
    assert pod_spec(objs)["topologySpreadConstraints"] == [constraint]


def test_config_changes_roll_the_pods_and_nothing_else_does():
    def checksum(values):
        return deployment(render(values))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum({})
    assert checksum({"refreshMargin": "5h"}) != base
    assert checksum({"policy": {"allowedNamespaces": ["argocd"]}}) != base
    assert checksum({"replicaCount": 3}) == base


def test_no_namespace_object_is_created(default_objs):
    # `helm install --create-namespace` or the user owns the namespace (and its Pod Security labels).
    assert not by_kind(default_objs, "Namespace")


# --- NOTES.txt and the install docs ------------------------------------------------------


def test_notes_tell_the_user_how_to_opt_a_secret_in():
    text = notes()
    assert 'ecr-token-webhook/inject: "true"' in text
    assert "kubectl -n NS label secret ecr-pull ecr-token-webhook/inject=true" in text
    assert "ecr-token-webhook/expires-at" in text
    assert "ecr-token-webhook/error" in text
    assert "get certificate ecr-token-webhook-serving" in text
    assert "No aws.roleArn is set" in text


def test_notes_follow_the_values():
    text = notes({**CUSTOM_VALUES, **SELF_MANAGED}, name=CUSTOM_RELEASE, namespace=CUSTOM_NAMESPACE)
    assert f"deploy/{CUSTOM_FULLNAME}" in text
    assert f"get secret {CUSTOM_FULLNAME}-self-managed-tls" in text
    assert "created by the webhook" not in text
    assert "kube-system or tools, nor in legacy, sandbox" in text
    assert "No aws.roleArn is set" not in text


def documented_helm_values() -> dict:
    page = (REPO_ROOT / "docs" / "install.md").read_text()
    m = re.search(r"The chart's main values.*?```yaml\n(.*?)```", page, re.S)
    assert m, "docs/install.md has no 'The chart's main values' YAML block"
    return yaml.safe_load(m.group(1))


def test_docs_helm_values_are_the_charts():
    """docs/install.md's example of the chart's values passes the chart's schema and renders."""
    values = documented_helm_values()
    helm.Chart.load(str(CHART)).validate_schema(values)
    assert not lint_problems(values)


def merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_docs_helm_set_flags_name_real_values():
    """Each `helm install`/`upgrade` in README.md and docs/install.md, with its --set flags parsed
    the way Helm parses them, passes the chart's schema and renders."""
    docs = (REPO_ROOT / "README.md").read_text() + "\n" + (REPO_ROOT / "docs" / "install.md").read_text()
    docs = re.sub(r"\\\n\s*", " ", docs)
    commands = [line for line in docs.splitlines() if re.search(r"\bhelm (install|upgrade)\b.*--set", line)]
    assert commands, "README.md and docs/install.md show no helm --set"
    chart = helm.Chart.load(str(CHART))
    for command in commands:
        words = shlex.split(command.split(" #")[0])
        values: dict = {}
        for flag, arg in zip(words, words[1:]):
            if flag == "--set":
                values = merged(values, helm.parse_set_string(arg))
        assert values, command
        chart.validate_schema(values)
        assert render(values), command
    # And a --set quoted in the prose (e.g. `--set aws.credentialsSecret=...`), on its own.
    for line in docs.splitlines():
        if not re.search(r"\bhelm (install|upgrade)\b", line):
            for arg in re.findall(r"--set ([A-Za-z][\w.]*=[^\s`']+)", line):
                chart.validate_schema(helm.parse_set_string(arg))
