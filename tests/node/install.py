"""Installing the project from its own manifests onto the node, with only what a test
environment must change: the image (the one built for the tier), the AWS endpoint (the suite's
fake ECR on the address pods reach this machine at), static test keys instead of IRSA, and short
token timings so the refresher has work within seconds. Everything else (RBAC, probes, security
context, PodDisruptionBudget, shutdown delay, the webhook configuration) is what users get."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import helm_python as helm
import yaml

from cluster import until
from manifest_checks import REPO_ROOT, parse_documents
from tier import NAMESPACE, REFRESH_INTERVAL, REFRESH_MARGIN, argocd_secret

DEPLOY = REPO_ROOT / "deploy"
SELF_MANAGED = DEPLOY / "overlays" / "self-managed"
CHART = DEPLOY / "helm" / "ecr-token-webhook"
AWS_SECRET = "ecr-token-webhook-aws"
DEPLOYMENT = "ecr-token-webhook"
LEASE = "ecr-token-webhook"
# Static keys of AWS's documentation examples: the fake ECR checks nothing but the region.
AWS_KEYS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


def aws_settings(ecr_url: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_ECR": ecr_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": "us-east-1",
    }


def timing_settings() -> dict[str, str]:
    return {
        "ECR_TOKEN_WEBHOOK_REFRESH_MARGIN": REFRESH_MARGIN,
        "ECR_TOKEN_WEBHOOK_REFRESH_INTERVAL": REFRESH_INTERVAL,
        "ECR_TOKEN_WEBHOOK_TOUCH_QPS": "50",
    }


def image_parts(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        raise ValueError(f"image {image!r} has no tag")
    return name, tag


def overlay(
    workdir: Path,
    base: Path,
    image: str,
    ecr_url: str,
    extra_patches: list[dict] | None = None,
    components: list[Path] | None = None,
) -> Path:
    """A test overlay in `workdir` on top of `base` (a directory of deploy/), with `components`
    (directories of deploy/components): kustomize refuses absolute paths there, so it names
    them by relative paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    name, tag = image_parts(image)
    literals = [f"{k}={v}" for k, v in {**aws_settings(ecr_url), **timing_settings()}.items()]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": [os.path.relpath(base, workdir)],
        "images": [{"name": "ecr-token-webhook", "newName": name, "newTag": tag}],
        "configMapGenerator": [{"name": "ecr-token-webhook-config", "behavior": "merge", "literals": literals}],
        # What deploy/base/serviceaccount.yaml says to do for static keys.
        "secretGenerator": [
            {
                "name": AWS_SECRET,
                "literals": [f"{k}={v}" for k, v in AWS_KEYS.items()],
                "options": {"disableNameSuffixHash": True},
            }
        ],
        "patches": [
            {
                "target": {"kind": "Deployment", "name": DEPLOYMENT},
                "patch": json.dumps(
                    [{"op": "add", "path": "/spec/template/spec/containers/0/envFrom/-", "value": {"secretRef": {"name": AWS_SECRET}}}]
                ),
            },
            {
                "target": {"kind": "ServiceAccount", "name": "ecr-token-webhook"},
                "patch": json.dumps([{"op": "remove", "path": "/metadata/annotations/eks.amazonaws.com~1role-arn"}]),
            },
            *(extra_patches or []),
        ],
    }
    if components:
        kustomization["components"] = [os.path.relpath(c, workdir) for c in components]
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return workdir


def chart_values(image: str, ecr_url: str) -> dict:
    name, tag = image_parts(image)
    return {
        "image": {"repository": name, "tag": tag, "pullPolicy": "IfNotPresent"},
        "tls": {"mode": "selfManaged"},
        "aws": {"credentialsSecret": AWS_SECRET, "region": "us-east-1"},
        "refreshMargin": REFRESH_MARGIN,
        "refreshInterval": REFRESH_INTERVAL,
        "touchQps": 50,
        "extraEnv": [{"name": k, "value": v} for k, v in aws_settings(ecr_url).items() if k != "AWS_REGION"],
    }


def render_chart(values: dict) -> list[dict]:
    """The chart as `helm install ecr-token-webhook -n ecr-token-webhook` renders it (helm's own
    SDK, as tests/manifests/test_helm.py renders it)."""
    files = helm.Chart.load(str(CHART)).render(values, name="ecr-token-webhook", namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml"):
            objects += parse_documents(text)
    return objects


@dataclass
class Kubectl:
    path: str
    kubeconfig: Path
    env: dict = field(default_factory=lambda: {k: v for k, v in os.environ.items() if k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "kubeconfig"}})

    def __call__(self, *args: str, input: str | None = None, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(
            [self.path, f"--kubeconfig={self.kubeconfig}", "--request-timeout=30s", *args],
            input=input, capture_output=True, text=True, timeout=timeout, env=self.env, check=False,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {p.returncode}:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
        return p

    def json(self, *args: str) -> dict:
        return json.loads(self("get", "-o", "json", *args).stdout)


def as_list(objects: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


@dataclass
class Install:
    """One installed copy of the webhook: what was applied, to delete it again."""

    kubectl: Kubectl
    objects: list[dict]
    seconds: float = 0.0

    def uninstall(self) -> None:
        # The namespace last, and waited for: the next install reuses its name.
        others = [o for o in self.objects if o["kind"] != "Namespace"]
        self.kubectl("delete", "--ignore-not-found", "--wait=true", "--timeout=120s", "-f", "-", input=as_list(others), timeout=180, check=False)
        self.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=120s", timeout=180, check=False)


def install(kubectl: Kubectl, objects: list[dict]) -> Install:
    """Applies the objects (the namespace first) and waits for the rollout; the time taken is
    kept for the report."""
    started = time.monotonic()
    if not any(o["kind"] == "Namespace" for o in objects):
        objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, *objects]
    inst = Install(kubectl, objects)
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    kubectl("apply", "-f", "-", input=as_list(namespaces))
    kubectl("apply", "-f", "-", input=as_list([o for o in objects if o["kind"] != "Namespace"]))
    kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=180s", timeout=200)
    # Installed means the API server calls it: the self-managed caBundle is in and picked up.
    until("the API server calling the webhook", lambda: probe_injects(kubectl), timeout=120, interval=0.5)
    inst.seconds = time.monotonic() - started
    return inst


def probe_injects(kubectl: Kubectl) -> bool:
    """A server-side dry-run create of a labelled secret comes back with a token."""
    out = kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(argocd_secret("probe", "default")), check=False)
    return out.returncode == 0 and "password" in json.loads(out.stdout).get("data", {})


def render_overlay(kubectl: Kubectl, path: Path) -> list[dict]:
    return parse_documents(kubectl("kustomize", str(path)).stdout)
