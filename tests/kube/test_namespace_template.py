"""The namespace-template recipe (docs/usage.md, "Every new namespace: a pull secret from a
template") against the real API server: a new namespace, labelled for its team as a template
would label it, gets the template's pull secret (created with no data at all, as kubectl would
send it) and the secret holds a token from its creation; the namespace's default ServiceAccount
can reference it. The webhook's policy file selects the team's namespaces by that label, read
with deploy/base's RBAC (get on namespaces). Secret values are compared, never printed."""

from __future__ import annotations

import base64
import json

import pytest

from cluster import Cluster
from tier import (
    ERROR,
    EXPIRES_AT,
    INJECT_LABEL,
    REGISTRIES,
    REGISTRY,
    TEAM_LABEL,
    Webhook,
    annotations,
    docker_auth,
)

OTHER_REGISTRY = "210987654321.dkr.ecr.us-east-1.amazonaws.com"


def template_secret(namespace: str, registries: str = REGISTRY) -> dict:
    """What the template creates: labelled, the registries annotation, and no data."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": "ecr-pull",
            "namespace": namespace,
            "labels": {INJECT_LABEL: "true"},
            "annotations": {REGISTRIES: registries},
        },
    }


def new_team_namespace(cluster: Cluster, name: str, team: str | None) -> None:
    labels = {TEAM_LABEL: team} if team else {}
    cluster.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )


@pytest.fixture(scope="module")
def team_namespace(cluster: Cluster, webhook: Webhook) -> str:
    name = "tier-template-team-a"
    new_team_namespace(cluster, name, "team-a")
    return name


def test_the_templates_secret_has_its_token_on_creation(cluster: Cluster, webhook: Webhook, team_namespace: str):
    created = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(template_secret(team_namespace)))
    # What the create returned is what was stored: the token was written in that very write.
    secret = json.loads(created.stdout)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    auth = docker_auth(secret)
    assert auth["username"] == "AWS"
    issued = webhook.ecr.find(auth["password"])
    assert issued is not None, "the secret's password is not a token the local ECR issued"
    assert EXPIRES_AT in annotations(secret)
    assert ERROR not in annotations(secret), annotations(secret).get(ERROR)
    assert "Warning" not in created.stderr, created.stderr


def test_the_default_service_account_can_reference_it(cluster: Cluster, webhook: Webhook, team_namespace: str):
    # The tier runs no controller manager, so no default ServiceAccount exists yet: create it as
    # a template or a mutation would leave it, referencing the pull secret.
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": team_namespace},
        "imagePullSecrets": [{"name": "ecr-pull"}],
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(sa))
    got = cluster.get_json("serviceaccount", "default", "-n", team_namespace)
    assert got["imagePullSecrets"] == [{"name": "ecr-pull"}]
    # And patched in place, as `oc secrets link` or a Kyverno mutation does.
    cluster.kubectl(
        "patch", "serviceaccount", "default", "-n", team_namespace, "--type=merge",
        "-p", json.dumps({"imagePullSecrets": [{"name": "ecr-pull"}, {"name": "other-pull"}]}),
    )
    got = cluster.get_json("serviceaccount", "default", "-n", team_namespace)
    assert [s["name"] for s in got["imagePullSecrets"]] == ["ecr-pull", "other-pull"]


def test_the_teams_rule_refuses_another_registry_by_name(cluster: Cluster, webhook: Webhook, team_namespace: str):
    secret = template_secret(team_namespace, OTHER_REGISTRY)
    secret["metadata"]["name"] = "other-account"
    # A refusal writes no token, so the API server's validation needs the placeholder here.
    secret["data"] = {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()}
    created = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(secret))
    stored = json.loads(created.stdout)
    want = (
        f"refused by policy rule team-a (rules[0]): registry {OTHER_REGISTRY} is not in its "
        "registries (123456789012:us-east-1)"
    )
    assert annotations(stored).get(ERROR) == want
    assert f"Warning: ecr-token-webhook: {want}" in created.stderr
    assert auths(stored) == {}, "no token written"
    # Not in a team's namespace: the catch-all rule applies.
    new_team_namespace(cluster, "tier-template-no-team", None)
    secret = template_secret("tier-template-no-team", OTHER_REGISTRY)
    stored = json.loads(cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(secret)).stdout)
    assert ERROR not in annotations(stored), annotations(stored).get(ERROR)
    assert docker_auth_for(stored, OTHER_REGISTRY)["username"] == "AWS"
    # The labels were read with deploy/base's RBAC, and counted refusals name the rule (the
    # refresher may have touched the refused secret since, so the count is at least one).
    metrics = webhook.metrics()
    assert 'ecr_token_webhook_policy_refusals_total{rule="team-a",reason="registry"} ' in metrics
    assert 'ecr_token_webhook_policy_refusals_total{rule="team-a",reason="labels"}' not in metrics


def auths(secret: dict) -> dict:
    return json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]).decode())["auths"]


def docker_auth_for(secret: dict, registry: str) -> dict:
    return auths(secret)[registry]
