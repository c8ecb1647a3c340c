"""The checks the tier makes on an installed webhook, shared by the overlay, chart and OpenShift
tests: replicas ready and one leader, a token written through the pod, the kubelet pulling with
it, a rolling restart under writes, a leader hand-over. Secret values are compared, never
printed."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from cluster import until
from install import DEPLOYMENT, LEASE, Install, Kubectl, install
from nodes import Api
from registry import Registry
from tier import (
    ERROR,
    EXPIRES_AT,
    NAMESPACE,
    REGISTRY,
    RENEWAL_WAIT_SECONDS,
    TOUCHED_AT,
    annotations,
    argocd_secret,
    decoded,
    docker_auth,
    pull_secret,
)

FIGURES: dict[str, str] = {}
SELECTOR = "app.kubernetes.io/name=ecr-token-webhook,app.kubernetes.io/component=webhook"


def figure(name: str, value: str) -> None:
    """A measurement for the closing note, printed at the end of the run (conftest)."""
    FIGURES[name] = value
    print(f"\n[node tier] {name}: {value}")


# --- pods, readiness, the leader --------------------------------------------------------------


def live_pods(kubectl: Kubectl) -> list[dict]:
    """The webhook's pods that are not being deleted."""
    pods = kubectl.json("pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def all_ready(kubectl: Kubectl) -> list[dict] | None:
    """The pods, when as many are ready as the Deployment asks for and no other is left."""
    want = kubectl.json("deployment", DEPLOYMENT, "-n", NAMESPACE)["spec"]["replicas"]
    pods = live_pods(kubectl)
    all_pods = kubectl.json("pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
    if len(all_pods) == want and len(pods) == want and all(is_ready(p) for p in pods):
        return pods
    return None


def lease_holder(kubectl: Kubectl) -> str:
    """The pod holding the Lease (the binary's identity is POD_NAME_PID)."""
    lease = kubectl.json("lease", LEASE, "-n", NAMESPACE)
    holder = lease.get("spec", {}).get("holderIdentity") or ""
    return holder.rpartition("_")[0] or holder


def metrics(api: Api, pod: str) -> str:
    """A pod's /metrics through the API server's proxy (works on any node, unlike pod IPs)."""
    return api.raw(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}:9090/proxy/metrics")


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def leaders(api: Api, pods: list[dict]) -> list[str]:
    """The pods whose ecr_token_webhook_leader gauge says 1."""
    return [p["metadata"]["name"] for p in pods if metric_sum(metrics(api, p["metadata"]["name"]), "ecr_token_webhook_leader") == 1]


def assert_all_ready_and_one_leader(kubectl: Kubectl, api: Api) -> str:
    pods = until("all replicas ready", lambda: all_ready(kubectl), timeout=180, interval=1)
    names = {p["metadata"]["name"] for p in pods}
    assert len(names) >= 2, f"the install runs {len(names)} replica(s); the manifests ask for 2"

    def one_leader() -> str | None:
        holder = lease_holder(kubectl)
        said = leaders(api, pods)
        return holder if holder in names and said == [holder] else None

    return until("one leader: the Lease's holder, and the only pod whose leader gauge is 1", one_leader, timeout=60, interval=1)


def admissions(api: Api, pods: list[dict]) -> float:
    return sum(metric_sum(metrics(api, p["metadata"]["name"]), "ecr_token_webhook_admission_requests_total") for p in pods)


# --- secrets ------------------------------------------------------------------------------------


def ensure_namespace(kubectl: Kubectl, name: str) -> str:
    kubectl("create", "namespace", name, check=False)
    until(f"the default ServiceAccount in {name}", lambda: kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0, timeout=60)
    return name


@contextmanager
def installed_for(
    kubectl: Kubectl, objects: list[dict], what: str, ns: str, note: str = "from kubectl apply to the rollout complete"
) -> Iterator[Install]:
    """The webhook installed from these objects, its install time kept as a figure, and the
    namespace `ns` for the test's own secrets and pods; both are deleted again afterwards."""
    inst = install(kubectl, objects)
    figure(f"install ({what})", f"{inst.seconds:.1f}s {note}")
    try:
        ensure_namespace(kubectl, ns)
        yield inst
    finally:
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
        inst.uninstall()


def assert_token_from_the_fake_ecr(ecr, secret: dict, password: str) -> None:
    assert ERROR not in annotations(secret), annotations(secret).get(ERROR)
    issued = ecr.find(password)
    assert issued is not None, "the secret's password is not a token the fake ECR issued"
    assert issued.region == "us-east-1"
    assert annotations(secret).get(EXPIRES_AT)


def assert_token_through_the_pod(kubectl: Kubectl, api: Api, ecr, ns: str) -> None:
    pods = live_pods(kubectl)
    before = admissions(api, pods)
    status, secret = api.create(argocd_secret("through-the-pod", ns))
    assert status == 201, secret.get("message")
    assert decoded(secret, "username") == "AWS"
    assert_token_from_the_fake_ecr(ecr, secret, decoded(secret, "password"))
    # The API server called a webhook pod for it (through the Service and kube-proxy).
    assert admissions(api, pods) > before


# --- the kubelet's pull -------------------------------------------------------------------------


def pod_manifest(name: str, ns: str, secret: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "imagePullSecrets": [{"name": secret}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "app",
                    "image": f"{REGISTRY}/app:1",
                    # Every pod start asks the registry, whatever containerd has already.
                    "imagePullPolicy": "Always",
                    "args": ["--version"],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def wrong_pull_secret(name: str, ns: str, password: str) -> dict:
    """A pull secret for REGISTRY that the webhook never sees (no label), with a password that is
    not the one written."""
    auth = {"username": "AWS", "password": password, "auth": base64.b64encode(f"AWS:{password}".encode()).decode()}
    config = json.dumps({"auths": {REGISTRY: auth}})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {".dockerconfigjson": config},
    }


def pull_seconds(kubectl: Kubectl, ns: str, pod: str) -> str:
    """The kubelet's own measure of the pull, from its Pulled event."""
    events = kubectl.json("events", "-n", ns, "--field-selector", f"involvedObject.name={pod},reason=Pulled")["items"]
    for e in events:
        m = re.search(r"Successfully pulled image .* in (\S+)", e.get("message", ""))
        if m:
            return m.group(1)
    return "?"


def assert_kubelet_pulls_with_the_written_token(kubectl: Kubectl, api: Api, ecr, registry: Registry, ns: str, label: str) -> None:
    status, secret = api.create(pull_secret("ecr-pull", ns))
    assert status == 201, secret.get("message")
    password = docker_auth(secret)["password"]
    assert_token_from_the_fake_ecr(ecr, secret, password)
    registry.expected = password

    before = registry.counts.snapshot()
    started = time.monotonic()
    kubectl("apply", "-f", "-", input=json.dumps(pod_manifest("pull-ok", ns, "ecr-pull")))

    def succeeded() -> bool:
        phase = kubectl.json("pod", "pull-ok", "-n", ns)["status"].get("phase")
        assert phase != "Failed", "the pulled image ran and failed"
        return phase == "Succeeded"

    # The kubelet's first attempt for a new pod can go out before it has the pod's pull secret
    # (401, retried about 10 s later): wait for the outcome, not the first attempt.
    until("the pod with the written token pulled its image and ran it", succeeded, timeout=180, interval=1)
    took = time.monotonic() - started
    after = registry.counts.snapshot()
    assert after["served"] > before["served"], "the pod ran, but the registry served containerd nothing"
    figure(f"pull ({label})", f"kubelet's pull {pull_seconds(kubectl, ns, 'pull-ok')}; pod created to Succeeded {took:.1f}s; "
           f"registry: {after['served'] - before['served']} authorised requests, "
           f"{after['no_credentials'] - before['no_credentials']} without credentials first")

    # The same image with another password: refused.
    kubectl("apply", "-f", "-", input=json.dumps(wrong_pull_secret("ecr-pull-wrong", ns, password + "x")))
    before = registry.counts.snapshot()
    kubectl("apply", "-f", "-", input=json.dumps(pod_manifest("pull-wrong", ns, "ecr-pull-wrong")))

    def refused() -> bool:
        if registry.counts.snapshot()["wrong_credentials"] <= before["wrong_credentials"]:
            return False
        pod = kubectl.json("pod", "pull-wrong", "-n", ns)
        assert pod["status"].get("phase") != "Succeeded", "a wrong password pulled the image"
        waiting = [c.get("state", {}).get("waiting", {}).get("reason") for c in pod["status"].get("containerStatuses", [])]
        if not set(waiting) & {"ErrImagePull", "ImagePullBackOff"}:
            return False
        events = kubectl.json("events", "-n", ns, "--field-selector", "involvedObject.name=pull-wrong,reason=Failed")["items"]
        return any("401 Unauthorized" in e.get("message", "") for e in events)

    until("the pod with a wrong password refused with 401", refused, timeout=120, interval=1)


# --- rolling restart under writes ---------------------------------------------------------------


@dataclass
class Writes:
    total: int = 0
    refused: list[str] = field(default_factory=list)
    without_token: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def assert_rolling_restart_loses_no_token(kubectl: Kubectl, api: Api, ecr, ns: str, per_second: float = 10) -> None:
    writes = Writes()
    stop = threading.Event()

    def write(i: int) -> None:
        status, secret = api.create(argocd_secret(f"w-{i}", ns), timeout=20)
        with writes.lock:
            writes.total += 1
            name = f"w-{i}"
            if status != 201:
                writes.refused.append(f"{name}: {status} {secret.get('message', '')}")
            elif not decoded(secret, "password") or ecr.find(decoded(secret, "password")) is None:
                writes.without_token.append(f"{name}: {annotations(secret).get(ERROR, 'no token, no error')}")

    def writer() -> None:
        # Several writes a second on a fixed schedule; a slow one does not hold up the next.
        with ThreadPoolExecutor(max_workers=8) as pool:
            i, started = 0, time.monotonic()
            while not stop.is_set():
                pool.submit(write, i)
                i += 1
                time.sleep(max(0.0, started + i / per_second - time.monotonic()))

    old = {p["metadata"]["name"] for p in live_pods(kubectl)}
    thread = threading.Thread(target=writer, name="writer", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        time.sleep(3)
        kubectl("-n", NAMESPACE, "rollout", "restart", f"deployment/{DEPLOYMENT}")
        kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=240s", timeout=260)

        def old_gone() -> bool:
            pods = kubectl.json("pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
            return not old & {p["metadata"]["name"] for p in pods}

        # Until the last old pod has finished its shutdown (delay + grace), then a little more.
        until("the old pods gone", old_gone, timeout=120, interval=0.5)
        time.sleep(3)
    finally:
        stop.set()
        thread.join(60)
    seconds = time.monotonic() - started
    figure(
        "rolling restart",
        f"{writes.total} labelled-secret writes in {seconds:.0f}s ({writes.total / seconds:.1f}/s), "
        f"{len(writes.refused)} refused, {len(writes.without_token)} without a token",
    )
    assert writes.total >= 3 * seconds, f"only {writes.total} writes in {seconds:.0f}s"
    assert writes.refused == [], writes.refused[:10]
    assert writes.without_token == [], writes.without_token[:10]
    assert_all_ready_and_one_leader(kubectl, api)


# --- leader hand-over ---------------------------------------------------------------------------


def rfc3339(unix_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_seconds))


def assert_leader_hands_over_and_the_refresher_renews(kubectl: Kubectl, api: Api, ecr, ns: str) -> None:
    leader = assert_all_ready_and_one_leader(kubectl, api)
    status, first = api.create(argocd_secret("renewed", ns))
    assert status == 201, first.get("message")
    first_expiry = annotations(first)[EXPIRES_AT]
    first_password = decoded(first, "password")

    started = time.monotonic()
    kubectl("-n", NAMESPACE, "delete", "pod", leader, "--wait=false")

    def new_leader() -> str | None:
        holder = lease_holder(kubectl)
        live = {p["metadata"]["name"] for p in live_pods(kubectl)}
        return holder if holder and holder != leader and holder in live else None

    successor = until("another pod holding the Lease", new_leader, timeout=120, interval=0.25)
    handover = time.monotonic() - started
    handed_over_at = time.time()
    said = until("the successor's leader gauge at 1", lambda: metric_sum(metrics(api, successor), "ecr_token_webhook_leader") == 1, timeout=60, interval=0.5)
    assert said

    def renewed() -> dict | None:
        s = kubectl.json("secret", "renewed", "-n", ns)
        a = annotations(s)
        # Touched by the refresher once the old leader had let go.
        return s if a.get(TOUCHED_AT, "") >= rfc3339(handed_over_at) and a.get(EXPIRES_AT, "") > first_expiry else None

    secret = until("a touch after the hand-over that renews the token", renewed, timeout=RENEWAL_WAIT_SECONDS, interval=1)
    renewal = time.monotonic() - started
    password = decoded(secret, "password")
    assert password != first_password, "expires-at moved but the password did not change"
    assert_token_from_the_fake_ecr(ecr, secret, password)
    took = metric_sum(metrics(api, successor), "ecr_token_webhook_refresh_touches_total", outcome="took")
    assert took >= 1, "the new leader reports no touch that took"
    figure("leader hand-over", f"{handover:.1f}s from deleting the leader to another pod holding the Lease; renewed {renewal:.0f}s after the delete")
    assert_all_ready_and_one_leader(kubectl, api)
