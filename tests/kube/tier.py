"""What the tier's tests share: names, timings, the running webhook, the secrets they create and
reading back what the webhook wrote (compared, never printed)."""

from __future__ import annotations

import base64
import json
import urllib.request

from cluster import Proc
from fake_ecr import FakeEcr

NAMESPACE = "ecr-token-webhook"
SERVICE_ACCOUNT = "ecr-token-webhook"
WEBHOOK_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"

# Token lifetime and refresh margin, chosen so the refresher finds a secret due within seconds:
# a written token has 45 s left; the cache hands it out while more than margin + slack (20 s +
# 2 s) is left; a secret is due when 20 s minus its spread offset (up to 5 s) is left, i.e. 25 to
# 30 s after its token was issued, and the refresher looks every 2 s. A touch then gets a new
# token (the cached one has gone stale), which has more than the margin left, so the touch takes.
TOKEN_LIFETIME_SECONDS = 45
REFRESH_MARGIN = "20s"
REFRESH_INTERVAL = "2s"
# The longest a test waits for a renewal by the refresher: two due points and then some.
RENEWAL_WAIT_SECONDS = 120

INJECT_LABEL = "ecr-token-webhook/inject"
EXPIRES_AT = "ecr-token-webhook/expires-at"
TOUCHED_AT = "ecr-token-webhook/touched-at"
ERROR = "ecr-token-webhook/error"
REGISTRIES = "ecr-token-webhook/registries"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"

# The webhook runs with this policy file: namespaces labelled for team-a (as a namespace template
# would label them) get only REGISTRY, and the webhook reads their labels with deploy/base's
# RBAC (get on namespaces); every other namespace gets any registry, as without a policy.
TEAM_LABEL = "tier.ecr-token-webhook.io/team"
POLICY = f"""rules:
  - name: team-a
    namespaces: ["*"]
    namespaceSelector:
      matchLabels: {{{TEAM_LABEL}: team-a}}
    registries: ["123456789012:us-east-1"]
  - name: everyone
    namespaces: ["*"]
    registries: ["*"]
"""


class Webhook:
    """The ecr-token-webhook binary serving on 127.0.0.1 and registered with the API server."""

    def __init__(self, proc: Proc, ecr: FakeEcr, metrics_url: str):
        self.proc = proc
        self.ecr = ecr
        self.metrics_url = metrics_url

    def metrics(self) -> str:
        with no_proxy().open(f"{self.metrics_url}/metrics", timeout=5) as r:
            return r.read().decode()


def no_proxy() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def argocd_secret(name: str, namespace: str) -> dict:
    """An Argo CD repository secret for an ECR Helm OCI registry, opted in."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"argocd.argoproj.io/secret-type": "repository", INJECT_LABEL: "true"},
        },
        "stringData": {"type": "helm", "name": "ecr", "url": REGISTRY, "enableOCI": "true"},
    }


def pull_secret(name: str, namespace: str) -> dict:
    """An image pull secret with no data at all: only the registries annotation says what to
    write. Valid only after the webhook has added .dockerconfigjson (validation runs after
    mutation)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {INJECT_LABEL: "true"},
            "annotations": {REGISTRIES: REGISTRY},
        },
    }


def decoded(secret: dict, key: str) -> str:
    return base64.b64decode(secret.get("data", {}).get(key, "")).decode()


def annotations(secret: dict) -> dict:
    return secret["metadata"].get("annotations", {})


def docker_auth(secret: dict) -> dict:
    """The auths entry for REGISTRY in a dockerconfigjson secret."""
    config = json.loads(decoded(secret, ".dockerconfigjson"))
    return config["auths"][REGISTRY]
