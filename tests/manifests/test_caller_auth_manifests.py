"""Caller authentication and the network fence as the manifests ship them: the kustomize
components (deploy/components/caller-auth, network-policy) and the chart's callerAuth and
networkPolicy values. The webhook reads the client CA the cert-manager objects make, the client
certificate carries the name the webhook requires, the NetworkPolicy selects the webhook's pods
and names its ports, and a default install has none of it."""

from __future__ import annotations

import pytest
from helm_python.errors import HelmError

from manifest_checks import (
    KUSTOMIZE_BASE,
    SCHEMA_VERSIONS,
    by_kind,
    config_map_data,
    container,
    deployment,
    one,
    pod_spec,
    schema_errors,
)
from test_guard_component import render_component
from test_helm import CALLER_AUTH, CUSTOM_FULLNAME, CUSTOM_NAMESPACE, CUSTOM_RELEASE, SELF_MANAGED, notes, render

COMPONENTS = KUSTOMIZE_BASE.parent / "components"


@pytest.fixture(scope="module")
def kustomize_caller_auth(tmp_path_factory) -> list[dict]:
    return render_component(COMPONENTS / "caller-auth", tmp_path_factory.mktemp("ca"), (KUSTOMIZE_BASE,))


@pytest.fixture(scope="module")
def kustomize_network_policy(tmp_path_factory) -> list[dict]:
    return render_component(COMPONENTS / "network-policy", tmp_path_factory.mktemp("np"), (KUSTOMIZE_BASE,))


def mounted_client_ca(objs: list[dict]) -> tuple[str, str]:
    """(the Secret whose ca.crt the webhook reads, the file's path in the container), checked
    against the variable that names it."""
    [mount] = [m for m in container(objs)["volumeMounts"] if m["name"] == "client-ca"]
    [volume] = [v for v in pod_spec(objs)["volumes"] if v["name"] == "client-ca"]
    # Only the certificate: the CA's key is not mounted.
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert mount["readOnly"] is True
    path = config_map_data(objs)["ECR_TOKEN_WEBHOOK_TLS_CLIENT_CA_FILE"]
    assert path == f"{mount['mountPath']}/ca.crt"
    return volume["secret"]["secretName"], path


def assert_issues_the_client_certificate(objs: list[dict], ca_secret: str, names: str) -> None:
    """cert-manager makes the CA the webhook reads, and from it a client certificate that
    carries the required name."""
    certs = {c["metadata"]["name"]: c for c in by_kind(objs, "Certificate")}
    issuers = {i["metadata"]["name"]: i for i in by_kind(objs, "Issuer")}
    [ca] = [c for c in certs.values() if c["spec"]["secretName"] == ca_secret]
    assert ca["spec"]["isCA"] is True
    assert "selfSigned" in issuers[ca["spec"]["issuerRef"]["name"]]["spec"]
    [ca_issuer] = [i for i in issuers.values() if i["spec"].get("ca", {}).get("secretName") == ca_secret]
    [client] = [c for c in certs.values() if c["spec"]["issuerRef"]["name"] == ca_issuer["metadata"]["name"]]
    assert client["spec"]["usages"] == ["digital signature", "client auth"]
    carried = {client["spec"]["commonName"], *client["spec"]["dnsNames"]}
    assert set(names.split(",")) <= carried
    # Its own CA: not the serving CA's Secret.
    serving_ca = [c for c in certs.values() if c["spec"].get("isCA") and c is not ca]
    assert all(c["spec"]["secretName"] != ca_secret for c in serving_ca)


def test_kustomize_component_mounts_the_client_ca_cert_manager_makes(kustomize_caller_auth):
    objs = kustomize_caller_auth
    secret, _ = mounted_client_ca(objs)
    assert secret == "ecr-token-webhook-client-ca"
    names = config_map_data(objs)["ECR_TOKEN_WEBHOOK_TLS_CLIENT_NAMES"]
    assert names == "kube-apiserver"
    assert_issues_the_client_certificate(objs, secret, names)
    # The serving TLS is still mounted and used.
    assert {v["name"] for v in pod_spec(objs)["volumes"]} == {"tls", "client-ca"}
    for version in SCHEMA_VERSIONS:
        assert schema_errors(objs, version) == []


def test_chart_caller_auth_with_cert_manager():
    objs = render(CALLER_AUTH, CUSTOM_RELEASE, CUSTOM_NAMESPACE)
    secret, _ = mounted_client_ca(objs)
    assert secret == f"{CUSTOM_FULLNAME}-client-ca"
    names = config_map_data(objs)["ECR_TOKEN_WEBHOOK_TLS_CLIENT_NAMES"]
    assert names == "kube-apiserver"
    assert_issues_the_client_certificate(objs, secret, names)
    assert one(objs, "Certificate", f"{CUSTOM_FULLNAME}-apiserver-client")["spec"]["secretName"] == (
        f"{CUSTOM_FULLNAME}-apiserver-client"
    )


def test_chart_caller_auth_with_a_ca_of_your_own():
    objs = render({**SELF_MANAGED, "callerAuth": {"enabled": True, "caSecret": "apiserver-ca", "clientNames": ["a", "b"]}})
    secret, _ = mounted_client_ca(objs)
    assert secret == "apiserver-ca"
    assert config_map_data(objs)["ECR_TOKEN_WEBHOOK_TLS_CLIENT_NAMES"] == "a,b"
    assert not by_kind(objs, "Certificate"), "no cert-manager objects without cert-manager"
    # Without names: any certificate from that CA.
    objs = render({"callerAuth": {"enabled": True, "caSecret": "apiserver-ca"}})
    assert "ECR_TOKEN_WEBHOOK_TLS_CLIENT_NAMES" not in config_map_data(objs)
    assert not [c for c in by_kind(objs, "Certificate") if "client" in c["metadata"]["name"]]


def test_chart_refuses_caller_auth_it_cannot_set_up():
    with pytest.raises(HelmError) as err:
        render({**SELF_MANAGED, "callerAuth": {"enabled": True}})
    assert "callerAuth.caSecret" in str(err.value)
    with pytest.raises(HelmError) as err:
        render({"networkPolicy": {"enabled": True}})
    assert "networkPolicy.webhookFrom" in str(err.value)
    with pytest.raises(HelmError):
        render({"callerAuth": {"enabled": True, "clientNames": ["a,b"]}})


def assert_fences_the_webhook(objs: list[dict], webhook_from: list[dict], metrics_namespace: str) -> None:
    policy = one(objs, "NetworkPolicy")
    labels = deployment(objs)["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= labels.items(), "the policy selects the webhook's pods"
    assert policy["spec"]["policyTypes"] == ["Ingress"], "egress (API server, STS, ECR) stays open"
    ports = {p["name"]: p["containerPort"] for p in container(objs)["ports"]}
    by_port = {r["ports"][0]["port"]: r["from"] for r in policy["spec"]["ingress"]}
    assert set(by_port) == {ports["https"], ports["metrics"]}
    assert by_port[ports["https"]] == webhook_from
    assert by_port[ports["metrics"]] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": metrics_namespace}}}
    ]
    # checkov's NetworkPolicy check is no longer skipped (test_checkov runs it).
    annotations = deployment(objs)["metadata"]["annotations"].values()
    assert not [a for a in annotations if a.startswith("CKV2_K8S_6=")]


def test_kustomize_network_policy(kustomize_network_policy):
    objs = kustomize_network_policy
    # The shipped source is a documentation range: it admits nothing until replaced.
    assert_fences_the_webhook(objs, [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "monitoring")
    for version in SCHEMA_VERSIONS:
        assert schema_errors(objs, version) == []


def test_chart_network_policy():
    objs = render(CALLER_AUTH, CUSTOM_RELEASE, CUSTOM_NAMESPACE)
    assert_fences_the_webhook(objs, CALLER_AUTH["networkPolicy"]["webhookFrom"], "monitoring")
    assert one(objs, "NetworkPolicy")["metadata"]["namespace"] == CUSTOM_NAMESPACE
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
              "podSelector": {"matchLabels": {"k8s-app": "konnectivity-agent"}}}]
    objs = render({"networkPolicy": {"enabled": True, "webhookFrom": peers, "metricsNamespace": "observability"}})
    assert_fences_the_webhook(objs, peers, "observability")


def test_default_install_has_neither():
    for objs in (render({}), render(SELF_MANAGED)):
        assert not by_kind(objs, "NetworkPolicy")
        assert not any(k.startswith("ECR_TOKEN_WEBHOOK_TLS_CLIENT") for k in config_map_data(objs))
        assert "client-ca" not in {v["name"] for v in pod_spec(objs).get("volumes", [])}


def test_notes_say_who_may_call_the_webhook():
    text = notes(CALLER_AUTH, name=CUSTOM_RELEASE, namespace=CUSTOM_NAMESPACE)
    assert f"Secret {CUSTOM_FULLNAME}-apiserver-client" in text and "caller_refusals" in text
    assert "Any client that reaches" not in text
    assert "Any client that reaches the webhook's Service can obtain tokens" in notes({})
    fenced = notes({"networkPolicy": CALLER_AUTH["networkPolicy"]})
    assert "Any client that reaches" not in fenced and "Caller authentication is on" not in fenced
