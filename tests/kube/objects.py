"""Secrets the tier creates, and reading back what the webhook wrote (never printed)."""

from __future__ import annotations

import base64
import json

INJECT_LABEL = "ecr-token-webhook/inject"
EXPIRES_AT = "ecr-token-webhook/expires-at"
TOUCHED_AT = "ecr-token-webhook/touched-at"
ERROR = "ecr-token-webhook/error"
REGISTRIES = "ecr-token-webhook/registries"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


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
