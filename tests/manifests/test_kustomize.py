"""deploy/base, rendered with `kubectl kustomize`: schemas, security settings, wiring."""

from __future__ import annotations

import os
import re
import textwrap

import pytest

from manifest_checks import (
    CRD_KINDS_WITHOUT_KUBERNETES_SCHEMA,
    KUSTOMIZE_BASE,
    NONROOT,
    SCHEMA_VERSIONS,
    assert_container_security_context_restricted,
    assert_no_create_on_secrets,
    assert_no_rbac_wildcards_or_escalation,
    assert_pod_security_context_restricted,
    assert_shutdown_fits_the_grace_period,
    by_kind,
    cli_env_vars,
    config_map_data,
    container,
    is_crd_kind,
    kustomize,
    one,
    pod_spec,
    rules_as_set,
    schema_errors,
)

NAMESPACE = "ecr-token-webhook"
NAME = "ecr-token-webhook"
SELECTOR = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "webhook"}
INJECT_LABEL = "ecr-token-webhook/inject"
HTTPS_PORT = 8443
METRICS_PORT = 9090

EXPECTED_OBJECTS = {
    ("Namespace", NAMESPACE),
    ("ServiceAccount", NAME),
    ("ClusterRole", NAME),
    ("ClusterRoleBinding", NAME),
    ("ClusterRole", NAME + "-namespaces"),
    ("ClusterRoleBinding", NAME + "-namespaces"),
    ("Role", NAME),
    ("RoleBinding", NAME),
    ("ConfigMap", "ecr-token-webhook-config"),
    ("Deployment", NAME),
    ("PodDisruptionBudget", NAME),
    ("Service", NAME),
    ("MutatingWebhookConfiguration", NAME),
    ("Issuer", "ecr-token-webhook-selfsigned"),
    ("Certificate", "ecr-token-webhook-ca"),
    ("Issuer", "ecr-token-webhook-ca"),
    ("Certificate", "ecr-token-webhook-serving"),
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}


# --- helpers -------------------------------------------------------------------------------


def container_port(objs, port):
    """A container port by number or by name, as a number."""
    ports = container(objs)["ports"]
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in ports], f"no container port {port}"
        return port
    named = [p["containerPort"] for p in ports if p.get("name") == port]
    assert len(named) == 1, f"no container port named {port!r}"
    return named[0]


def the_webhook(objs):
    mwc = one(objs, "MutatingWebhookConfiguration", NAME)
    assert len(mwc["webhooks"]) == 1
    return mwc["webhooks"][0]


def serving_certificate(objs):
    return one(objs, "Certificate", "ecr-token-webhook-serving")


# --- rendering and schemas -----------------------------------------------------------------


def test_renders_exactly_the_expected_objects(base_objects):
    found = [
        (o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"]) if o["kind"] == "ConfigMap" else o["metadata"]["name"])
        for o in base_objects
    ]
    assert len(found) == len(set(found)), f"duplicate objects: {found}"
    assert set(found) == EXPECTED_OBJECTS


def test_namespaced_objects_are_in_the_webhook_namespace(base_objects):
    for o in base_objects:
        ns = o["metadata"].get("namespace")
        if o["kind"] in CLUSTER_SCOPED:
            assert ns is None, f"{o['kind']} is cluster-scoped but has namespace {ns}"
        else:
            assert ns == NAMESPACE, f"{o['kind']}/{o['metadata']['name']} in {ns!r}"


def test_every_object_carries_the_common_labels(base_objects):
    for o in base_objects:
        labels = o["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == NAME, o["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == NAME, o["metadata"]["name"]


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_builtin_kinds_validate_against_kubernetes_schemas(base_objects, version):
    errors = schema_errors(base_objects, version)
    assert not errors, "\n".join(errors)
    # Guard against the skip list quietly growing over a built-in kind.
    for api_version, kind in CRD_KINDS_WITHOUT_KUBERNETES_SCHEMA:
        assert "." in api_version.split("/")[0], f"{kind} {api_version} is not a CRD group"


def test_schema_validation_catches_a_typo(base_objects):
    """The strict schemas reject unknown fields, so a misspelt field cannot slip through."""
    deployment = one(base_objects, "Deployment", NAME)
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    assert schema_errors([broken], SCHEMA_VERSIONS[-1])


def test_only_listed_crd_kinds_are_skipped(base_objects):
    skipped = {(o["apiVersion"], o["kind"]) for o in base_objects if is_crd_kind(o)}
    assert skipped == {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}


# --- namespace, service account ------------------------------------------------------------


def test_namespace_enforces_restricted_pod_security(base_objects):
    labels = one(base_objects, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels.get("pod-security.kubernetes.io/warn", "restricted") == "restricted"
    assert labels.get("pod-security.kubernetes.io/audit", "restricted") == "restricted"


def test_service_account_has_the_irsa_annotation_and_a_token(base_objects):
    sa = one(base_objects, "ServiceAccount", NAME)
    arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", arn), arn
    assert sa.get("automountServiceAccountToken") is True
    spec = pod_spec(base_objects)
    assert spec["serviceAccountName"] == NAME
    assert spec["automountServiceAccountToken"] is True


# --- RBAC ----------------------------------------------------------------------------------


def test_no_rbac_wildcards_or_escalation(base_objects):
    assert_no_rbac_wildcards_or_escalation(base_objects)
    assert_no_create_on_secrets(base_objects)


def test_cluster_role_grants_exactly_list_patch_on_secrets_and_create_on_events(base_objects):
    granted = rules_as_set(one(base_objects, "ClusterRole", NAME)["rules"])
    assert granted == {
        ("", "secrets", "", "list"),  # the refresher's label-selected, metadata-only list
        ("", "secrets", "", "patch"),  # the one-annotation touch
        ("", "events", "", "create"),  # a Warning Event in the secret's namespace
    }
    secret_verbs = {v for (_, res, _, v) in granted if res == "secrets"}
    assert not secret_verbs & {"get", "watch", "create", "update", "delete", "deletecollection"}


def test_role_grants_only_the_leader_lease(base_objects):
    role = one(base_objects, "Role", NAME)
    assert role["metadata"]["namespace"] == NAMESPACE
    lease_name = config_map_data(base_objects)["ECR_TOKEN_WEBHOOK_LEASE_NAME"]
    assert rules_as_set(role["rules"]) == {
        ("coordination.k8s.io", "leases", "", "create"),
        ("coordination.k8s.io", "leases", lease_name, "get"),
        ("coordination.k8s.io", "leases", lease_name, "update"),
    }


@pytest.mark.parametrize("kind,role_kind", [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")])
def test_bindings_bind_the_service_account(base_objects, kind, role_kind):
    b = one(base_objects, kind, NAME)
    assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": NAME}
    assert b["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]


# --- Deployment ----------------------------------------------------------------------------


def test_deployment_runs_two_replicas_with_matching_selector(base_objects):
    d = one(base_objects, "Deployment", NAME)
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"] == {"matchLabels": SELECTOR}
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    assert SELECTOR.items() <= pod_labels.items()
    rolling = d["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


def test_pod_security_context_is_restricted(base_objects):
    assert_pod_security_context_restricted(base_objects)


def test_container_security_context_is_restricted(base_objects):
    assert_container_security_context_restricted(base_objects)


def test_container_has_requests_and_a_memory_limit(base_objects):
    res = container(base_objects)["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"]
    assert res["limits"]["memory"]


def test_image_and_args(base_objects):
    c = container(base_objects)
    assert c["image"] == "ecr-token-webhook:0.1.0"
    assert c["args"] == ["serve", "--tls-cert-file", "/tls/tls.crt", "--tls-key-file", "/tls/tls.key"]
    assert "command" not in c, "the image's ENTRYPOINT is the binary"


def test_ports(base_objects):
    ports = {p["name"]: p["containerPort"] for p in container(base_objects)["ports"]}
    assert ports == {"https": HTTPS_PORT, "metrics": METRICS_PORT}


@pytest.mark.parametrize("probe,path", [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")])
def test_probes_hit_the_metrics_port(base_objects, probe, path):
    p = container(base_objects)[probe]
    assert p["httpGet"]["path"] == path
    assert p["httpGet"].get("scheme", "HTTP") == "HTTP"
    assert container_port(base_objects, p["httpGet"]["port"]) == METRICS_PORT


def test_graceful_shutdown_fits_the_termination_grace(base_objects):
    assert_shutdown_fits_the_grace_period(base_objects)
    data = config_map_data(base_objects)
    assert data["ECR_TOKEN_WEBHOOK_SHUTDOWN_DELAY"] == "5s"
    assert data["ECR_TOKEN_WEBHOOK_SHUTDOWN_GRACE"] == "15s"
    assert pod_spec(base_objects)["terminationGracePeriodSeconds"] == 30
    # Nothing else needs a lifecycle hook: the binary handles SIGTERM itself.
    assert "lifecycle" not in container(base_objects)


def test_tls_secret_is_mounted_read_only_from_the_serving_certificate(base_objects):
    c = container(base_objects)
    mounts = [m for m in c["volumeMounts"] if m["mountPath"] == "/tls"]
    assert len(mounts) == 1 and mounts[0]["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec(base_objects)["volumes"]}
    secret = volumes[mounts[0]["name"]]["secret"]
    assert secret["secretName"] == serving_certificate(base_objects)["spec"]["secretName"]
    mode = secret.get("defaultMode", 0o644)
    assert mode & 0o007 == 0, f"TLS key readable by others: {oct(mode)}"
    assert pod_spec(base_objects)["securityContext"].get("fsGroup") == NONROOT
    # Nothing writable: no emptyDir, no hostPath.
    for v in pod_spec(base_objects)["volumes"]:
        assert set(v) - {"name"} <= {"secret", "projected", "configMap"}, v


def test_topology_spread_over_hosts_and_zones(base_objects):
    constraints = {c["topologyKey"]: c for c in pod_spec(base_objects)["topologySpreadConstraints"]}
    assert set(constraints) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert constraints["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for c in constraints.values():
        assert c["maxSkew"] == 1
        assert c["labelSelector"] == {"matchLabels": SELECTOR}


def test_environment_names_only_variables_the_binary_reads(base_objects):
    known = cli_env_vars()
    data = config_map_data(base_objects)
    assert data["ECR_TOKEN_WEBHOOK_LOG_FORMAT"] == "json"
    for key in data:
        assert key in known, f"{key} is not read by the binary (src/commands/)"
    env = {e["name"]: e for e in container(base_objects).get("env", [])}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    for name in env:
        assert name in known or name in {"POD_NAME", "POD_NAMESPACE"}, name
    # The TLS files are given as args; nothing may switch to a self-signed certificate.
    assert "ECR_TOKEN_WEBHOOK_TLS_SELF_SIGNED" not in data


# --- PodDisruptionBudget, Service ----------------------------------------------------------


def test_pod_disruption_budget(base_objects):
    pdb = one(base_objects, "PodDisruptionBudget", NAME)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": SELECTOR}


def test_service_maps_443_to_the_https_container_port(base_objects):
    svc = one(base_objects, "Service", NAME)
    assert svc["spec"]["selector"] == SELECTOR
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["https"]["port"] == 443
    assert container_port(base_objects, ports["https"]["targetPort"]) == HTTPS_PORT
    assert ports["metrics"]["port"] == METRICS_PORT
    assert container_port(base_objects, ports["metrics"]["targetPort"]) == METRICS_PORT


# --- MutatingWebhookConfiguration ----------------------------------------------------------


def test_webhook_calls_the_service(base_objects):
    w = the_webhook(base_objects)
    svc = one(base_objects, "Service", NAME)
    assert w["clientConfig"]["service"] == {
        "name": svc["metadata"]["name"],
        "namespace": svc["metadata"]["namespace"],
        "path": "/mutate",
        "port": 443,
    }
    assert "url" not in w["clientConfig"]
    # cainjector fills it in; a literal one would go stale.
    assert "caBundle" not in w["clientConfig"]


def test_webhook_matches_only_opted_in_secrets(base_objects):
    w = the_webhook(base_objects)
    assert re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+){2,}", w["name"]), w["name"]
    assert w["objectSelector"] == {"matchLabels": {INJECT_LABEL: "true"}}
    assert w["rules"] == [
        {
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["secrets"],
            "scope": "Namespaced",
        }
    ]


def test_webhook_leaves_out_kube_system_and_its_own_namespace(base_objects):
    w = the_webhook(base_objects)
    assert w["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", NAMESPACE],
            }
        ]
    }


def test_webhook_failure_and_timing_settings(base_objects):
    w = the_webhook(base_objects)
    assert w["sideEffects"] == "None"
    assert w["admissionReviewVersions"] == ["v1"]
    assert w["failurePolicy"] == "Ignore"
    assert w["timeoutSeconds"] == 5
    assert w["matchPolicy"] == "Equivalent"
    assert w["reinvocationPolicy"] == "Never"


def test_inject_ca_from_names_the_serving_certificate(base_objects):
    mwc = one(base_objects, "MutatingWebhookConfiguration", NAME)
    cert = serving_certificate(base_objects)
    expected = f"{cert['metadata']['namespace']}/{cert['metadata']['name']}"
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == expected


# --- cert-manager (CRD kinds: no Kubernetes schema, so checked field by field) -------------


def test_serving_certificate_covers_the_service_names(base_objects):
    cert = serving_certificate(base_objects)
    svc = one(base_objects, "Service", NAME)
    host = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    assert cert["spec"]["dnsNames"] == [host, f"{host}.cluster.local"]
    assert the_webhook(base_objects)["clientConfig"]["service"]["name"] == svc["metadata"]["name"]


def test_serving_certificate_fields(base_objects):
    spec = serving_certificate(base_objects)["spec"]
    assert set(spec) <= {
        "secretName", "dnsNames", "duration", "renewBefore", "privateKey", "usages", "issuerRef",
    }, spec
    assert spec["secretName"] == "ecr-token-webhook-tls"
    assert spec.get("isCA", False) is False
    assert "server auth" in spec["usages"]
    assert spec["privateKey"]["algorithm"] == "ECDSA"
    assert hours(spec["renewBefore"]) < hours(spec["duration"])


def hours(duration: str) -> float:
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert m and duration, f"not a cert-manager duration: {duration!r}"
    h, mi, s = (int(g or 0) for g in m.groups())
    return h + mi / 60 + s / 3600


def test_certificate_chain_selfsigned_to_ca_to_serving(base_objects):
    issuers = {o["metadata"]["name"]: o for o in by_kind(base_objects, "Issuer")}
    certs = {o["metadata"]["name"]: o for o in by_kind(base_objects, "Certificate")}
    for o in list(issuers.values()) + list(certs.values()):
        assert o["apiVersion"] == "cert-manager.io/v1"
        assert o["metadata"]["namespace"] == NAMESPACE

    selfsigned = issuers["ecr-token-webhook-selfsigned"]
    assert selfsigned["spec"] == {"selfSigned": {}}

    ca = certs["ecr-token-webhook-ca"]["spec"]
    assert ca["isCA"] is True
    assert ca["privateKey"]["algorithm"] == "ECDSA"
    assert ca["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "ecr-token-webhook-selfsigned"}
    assert hours(ca["renewBefore"]) < hours(ca["duration"])

    ca_issuer = issuers["ecr-token-webhook-ca"]
    assert ca_issuer["spec"] == {"ca": {"secretName": ca["secretName"]}}

    serving = certs["ecr-token-webhook-serving"]["spec"]
    assert serving["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "ecr-token-webhook-ca"}
    # The serving certificate renews (and so moves to a renewed CA) well before the CA expires.
    assert hours(serving["duration"]) < hours(ca["renewBefore"])


# --- overlays ------------------------------------------------------------------------------


def test_an_overlay_can_override_the_image(tmp_path):
    # kustomize refuses absolute paths in resources:, so the base is named relative to tmp_path.
    (tmp_path / "kustomization.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources:
              - {os.path.relpath(KUSTOMIZE_BASE, tmp_path)}
            images:
              - name: ecr-token-webhook
                newName: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ecr-token-webhook
                newTag: "9.9.9"
            """
        )
    )
    objs = kustomize(tmp_path)
    assert container(objs)["image"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/ecr-token-webhook:9.9.9"
