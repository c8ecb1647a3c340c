"""End to end against the real API server: secrets written with kubectl go through the webhook
binary (registered with deploy/base's rules, served over TLS on 127.0.0.1) and get tokens from
the local ECR; the refresher, running as the webhook's service account with deploy/base's RBAC,
touches them before their short-lived tokens expire and they come back renewed.

Secret values are compared, never printed."""

from __future__ import annotations

import json
import time

import pytest

from cluster import Cluster, until
from tier import (
    RENEWAL_WAIT_SECONDS,
    Webhook,
    ERROR,
    EXPIRES_AT,
    REGISTRY,
    TOUCHED_AT,
    annotations,
    argocd_secret,
    decoded,
    docker_auth,
    pull_secret,
)

NS = "tier-e2e"


def rfc3339(unix_seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_seconds))


@pytest.fixture(scope="module")
def ns(cluster: Cluster, webhook: Webhook) -> str:
    cluster.ensure_namespace(NS)
    return NS


def create(cluster: Cluster, obj: dict) -> dict:
    cluster.kubectl("create", "-f", "-", input=json.dumps(obj))
    return get(cluster, obj["metadata"]["namespace"], obj["metadata"]["name"])


def get(cluster: Cluster, namespace: str, name: str) -> dict:
    return cluster.get_json("secret", name, "-n", namespace)


def assert_holds_issued_token(webhook: Webhook, secret: dict, password: str) -> None:
    """`password` is a token the fake ECR issued, and expires-at is that token's expiry."""
    issued = webhook.ecr.find(password)
    assert issued is not None, "the secret's password is not a token the local ECR issued"
    assert issued.region == "us-east-1"
    assert annotations(secret).get(EXPIRES_AT) == rfc3339(issued.expires_at)
    assert ERROR not in annotations(secret), annotations(secret).get(ERROR)


def test_argocd_repository_secret_gets_a_token(cluster: Cluster, webhook: Webhook, ns: str):
    secret = create(cluster, argocd_secret("argocd-repo", ns))
    assert decoded(secret, "username") == "AWS"
    assert_holds_issued_token(webhook, secret, decoded(secret, "password"))
    # What the user wrote is kept.
    assert decoded(secret, "url") == REGISTRY
    assert decoded(secret, "enableOCI") == "true"


def test_image_pull_secret_without_data_gets_a_docker_config(cluster: Cluster, webhook: Webhook, ns: str):
    # No data at all: the API server would refuse a dockerconfigjson Secret without
    # .dockerconfigjson, but validation runs after the webhook has written it.
    secret = create(cluster, pull_secret("pull", ns))
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    auth = docker_auth(secret)
    assert auth["username"] == "AWS"
    assert_holds_issued_token(webhook, secret, auth["password"])
    assert decoded({"data": {"a": auth["auth"]}}, "a") == f"AWS:{auth['password']}"


def test_refresher_renews_a_secret_before_its_token_expires(cluster: Cluster, webhook: Webhook, ns: str):
    first = create(cluster, argocd_secret("renewed", ns))
    first_password = decoded(first, "password")
    first_expiry = annotations(first)[EXPIRES_AT]
    assert TOUCHED_AT not in annotations(first)

    def renewed() -> dict | None:
        s = get(cluster, ns, "renewed")
        a = annotations(s)
        return s if TOUCHED_AT in a and a.get(EXPIRES_AT, "") > first_expiry else None

    secret = until("a touch by the refresher that renews the token", renewed, timeout=RENEWAL_WAIT_SECONDS, interval=1)
    password = decoded(secret, "password")
    assert password != first_password, "expires-at moved but the password did not change"
    assert_holds_issued_token(webhook, secret, password)
    assert decoded(secret, "username") == "AWS"
    # The touch took: no Warning Event says otherwise.
    events = cluster.get_json("events", "-n", ns, "--field-selector", "involvedObject.name=renewed")
    assert [e["message"] for e in events["items"] if e.get("reason") == "TokenNotRefreshed"] == []
    # deploy/base's RBAC is enough for the refresher: no touch was forbidden.
    metrics = webhook.metrics()
    assert 'ecr_token_webhook_refresh_touches_total{outcome="took"}' in metrics
    assert 'ecr_token_webhook_refresh_touches_total{outcome="forbidden"}' not in metrics
