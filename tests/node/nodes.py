"""The node the tier runs on, behind one small interface, and a thin Kubernetes API client.

Two kinds of node:

- KitNode: the project's real single-node Kubernetes kit (../shared/k8s/node, named by
  ECR_TOKEN_WEBHOOK_NODE_KIT). The tier boots it (setup.sh, start.sh), builds the image from a
  static binary with the kit's buildah, loads it, maps registry names with map-registry.sh and
  stops the node at the end (stop.sh), whatever happened.
- KindNode: a kind cluster made beforehand (ECR_TOKEN_WEBHOOK_NODE_KIND names it, as the GitHub
  workflow does), with the image built from the Dockerfile already loaded
  (ECR_TOKEN_WEBHOOK_NODE_IMAGE). Registry names are mapped through containerd's certs.d inside
  the kind node containers.

Both give the address at which pods reach this machine (where the tests serve ECR and the
registry), a kubeconfig, and the same operations. Nothing here skips: a node that cannot be
booted or reached fails the tier with the reason.
"""

from __future__ import annotations

import base64
import fcntl
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import yaml

KIT_ENV = "ECR_TOKEN_WEBHOOK_NODE_KIT"
KIND_ENV = "ECR_TOKEN_WEBHOOK_NODE_KIND"
IMAGE_ENV = "ECR_TOKEN_WEBHOOK_NODE_IMAGE"
BIN_ENV = "ECR_TOKEN_WEBHOOK_NODE_BIN"

# The image the tier installs when it builds one itself (KitNode). containerd keeps the
# archive's name as written; `ecr-token-webhook:node-tier` in a pod spec means this.
KIT_IMAGE = "docker.io/library/ecr-token-webhook:node-tier"


class NodeError(Exception):
    """The node could not be booted, reached or used."""


def run(argv: list[str], timeout: float, env: dict | None = None, input: str | None = None) -> str:
    """Runs a command; its output on success, NodeError with its output otherwise."""
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, input=input, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise NodeError(f"{' '.join(argv)}: no result within {timeout:.0f}s") from e
    if p.returncode != 0:
        raise NodeError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return p.stdout


def no_proxy_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}}
    env.pop("KUBECONFIG", None)
    env.update(extra)
    return env


class KitNode:
    """The kit's node on this machine (root only)."""

    host_ip = "10.245.0.1"

    def __init__(self, kit: Path, workdir: Path):
        self.kit = kit
        self.state = Path(os.environ.get("K8S_NODE_STATE", "/var/tmp/k8s-node"))
        self.workdir = workdir
        self.kubeconfig = self.state / "kubeconfig"
        self.image = KIT_IMAGE
        self._lock = None
        self.env = no_proxy_env(K8S_NODE_STATE=str(self.state))

    def describe(self) -> str:
        return f"the node kit {self.kit} (state {self.state})"

    def _script(self, name: str, *args: str, timeout: float, **env: str) -> str:
        return run([str(self.kit / name), *args], timeout, env={**self.env, **env})

    def start(self) -> None:
        for script in ("setup.sh", "start.sh", "stop.sh", "load-image.sh", "map-registry.sh", "buildah.sh"):
            if not os.access(self.kit / script, os.X_OK):
                raise NodeError(f"{KIT_ENV}={self.kit}: no executable {script} there")
        if os.geteuid() != 0:
            raise NodeError("the node kit needs root (network, mounts, cgroups)")
        self._script("setup.sh", timeout=600)
        # The node to ourselves for the whole run: the kit's scripts see the lock as held.
        self._lock = open(self.state / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise NodeError(f"another user holds {self.state}/.lock: {e}") from e
        self.env["K8S_NODE_LOCK_HELD"] = "1"
        # The API server calls the webhook through its Service's ClusterIP and kube-proxy, as on
        # most clusters (not straight at pod IPs), so a rolling restart exercises both.
        self._script("start.sh", timeout=300, APISERVER_ROUTING="service")

    def stop(self) -> None:
        try:
            self._script("stop.sh", timeout=180)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def logs(self) -> str:
        out = []
        for name in ("kubelet", "containerd", "kube-apiserver"):
            p = self.state / "logs" / f"{name}.log"
            try:
                lines = p.read_text(errors="replace").splitlines()[-25:]
            except OSError:
                continue
            out.append(f"--- {name} (last 25 lines of {p})\n" + "\n".join(lines))
        return "\n".join(out)

    def build_and_load_image(self, binary: Path) -> str:
        """The image the Dockerfile would make, from the same kind of binary: a static one on a
        FROM-scratch copy of what distroless/static brings (CA bundle, passwd and group with
        nonroot, /tmp, a home), run as 65532:65532. Returns the config digest containerd will
        report as the pods' imageID."""
        root = self.workdir / "rootfs"
        for d in ("etc/ssl/certs", "usr/local/bin", "home/nonroot", "tmp"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, root / "usr/local/bin/ecr-token-webhook")
        (root / "usr/local/bin/ecr-token-webhook").chmod(0o755)
        shutil.copy2("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")
        (root / "etc/passwd").write_text(
            "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
            "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
        )
        (root / "etc/group").write_text("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")
        (root / "tmp").chmod(0o1777)
        (root / "home/nonroot").chmod(0o700)
        b = str(self.kit / "buildah.sh")
        c = run([b, "from", "scratch"], 120, env=self.env).strip()
        run([b, "copy", c, str(root), "/"], 120, env=self.env)
        mnt = run([b, "mount", c], 60, env=self.env).strip()
        os.chown(Path(mnt) / "home/nonroot", 65532, 65532)
        run([b, "umount", c], 60, env=self.env)
        run(
            [
                b, "config", "--user", "65532:65532", "--workingdir", "/home/nonroot",
                "--port", "8443", "--port", "9090",
                "--env", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                "--entrypoint", '["/usr/local/bin/ecr-token-webhook"]', "--cmd", '["--help"]', c,
            ],
            60,
            env=self.env,
        )
        run([b, "commit", "-q", "--rm", c, self.image], 300, env=self.env)
        archive = self.workdir / "ecr-token-webhook.tar"
        archive.unlink(missing_ok=True)
        run([b, "push", "-q", self.image, f"docker-archive:{archive}:{self.image}"], 300, env=self.env)
        run([b, "rmi", self.image], 60, env=self.env)
        self._script("load-image.sh", str(archive), timeout=300)
        # The archive's Config file name is the config digest.
        with tarfile.open(archive) as t:
            manifest = json.load(t.extractfile("manifest.json"))
        return "sha256:" + manifest[0]["Config"].split("/")[-1].removesuffix(".json")

    def map_registry(self, name: str, url: str, ca: Path) -> None:
        self._script("map-registry.sh", name, url, str(ca), timeout=60)

    def unmap_registry(self, name: str) -> None:
        self._script("map-registry.sh", "--remove", name, timeout=60)


class KindNode:
    """A kind cluster made beforehand, its image already loaded (the GitHub workflow)."""

    def __init__(self, cluster: str, image: str, workdir: Path):
        self.cluster = cluster
        self.image = image
        self.workdir = workdir
        self.kubeconfig = workdir / "kind.kubeconfig"
        self.host_ip = ""

    def describe(self) -> str:
        return f"the kind cluster {self.cluster}"

    def start(self) -> None:
        for tool in ("kind", "docker"):
            if not shutil.which(tool):
                raise NodeError(f"{KIND_ENV} is set but {tool} is not on PATH")
        self.kubeconfig.write_text(run(["kind", "get", "kubeconfig", "--name", self.cluster], 60))
        self.kubeconfig.chmod(0o600)
        # Pods reach this machine at the gateway of the docker network the nodes are on.
        networks = json.loads(run(["docker", "network", "inspect", "kind"], 60))
        gateways = [c.get("Gateway", "") for n in networks for c in n.get("IPAM", {}).get("Config", [])]
        v4 = [g for g in gateways if g and ipaddress.ip_address(g).version == 4]
        if not v4:
            raise NodeError(f"no IPv4 gateway on the docker network kind: {gateways}")
        self.host_ip = v4[0]

    def stop(self) -> None:
        pass  # the workflow deletes the cluster

    def logs(self) -> str:
        return ""

    def nodes(self) -> list[str]:
        return run(["kind", "get", "nodes", "--name", self.cluster], 60).split()

    def map_registry(self, name: str, url: str, ca: Path) -> None:
        """What map-registry.sh does, inside every kind node: a certs.d entry (the cluster's
        containerd is configured with config_path = /etc/containerd/certs.d) with a host table,
        and the CA beside it."""
        hosts = (
            f'server = "{url}"\nca = "/etc/containerd/certs.d/{name}/ca.crt"\n'
            f'[host."{url}"]\n  capabilities = ["pull", "resolve"]\n  ca = "/etc/containerd/certs.d/{name}/ca.crt"\n'
        )
        for node in self.nodes():
            run(["docker", "exec", node, "mkdir", "-p", f"/etc/containerd/certs.d/{name}"], 60)
            run(["docker", "cp", str(ca), f"{node}:/etc/containerd/certs.d/{name}/ca.crt"], 60)
            run(["docker", "exec", "-i", node, "sh", "-c", f"cat > /etc/containerd/certs.d/{name}/hosts.toml"], 60, input=hosts)

    def unmap_registry(self, name: str) -> None:
        for node in self.nodes():
            run(["docker", "exec", node, "rm", "-rf", f"/etc/containerd/certs.d/{name}"], 60)


def node_from_env(workdir: Path) -> KitNode | KindNode:
    kit, kind = os.environ.get(KIT_ENV, ""), os.environ.get(KIND_ENV, "")
    if kit and kind:
        raise NodeError(f"set {KIT_ENV} or {KIND_ENV}, not both")
    if kit:
        return KitNode(Path(kit).resolve(), workdir)
    if kind:
        image = os.environ.get(IMAGE_ENV, "")
        if not image:
            raise NodeError(f"{KIND_ENV} needs {IMAGE_ENV}: the image loaded into the cluster (kind load docker-image)")
        return KindNode(kind, image, workdir)
    raise NodeError(
        f"neither {KIT_ENV} (the node kit's directory) nor {KIND_ENV} (a kind cluster) is set: "
        "this tier needs a real node (scripts/test.sh runs it only when one is named)"
    )


# --- a thin API client, for writes faster than one kubectl process each --------------------


class Api:
    """JSON over HTTPS to the API server, with the kubeconfig's current context credentials
    (client certificate or token, inline or in files)."""

    def __init__(self, kubeconfig: Path):
        cfg = yaml.safe_load(kubeconfig.read_text())
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self.server = cluster["server"].rstrip("/")
        self._dir = Path(tempfile.mkdtemp(prefix="node-api-"))
        ctx_ssl = ssl.create_default_context(cadata=self._pem(cluster, "certificate-authority").decode())
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if "client-certificate-data" in user or "client-certificate" in user:
            cert = self._dir / "client.crt"
            key = self._dir / "client.key"
            cert.write_bytes(self._pem(user, "client-certificate"))
            key.write_bytes(self._pem(user, "client-key"))
            key.chmod(0o600)
            ctx_ssl.load_cert_chain(cert, key)
        elif "token" in user:
            self._headers["authorization"] = f"Bearer {user['token']}"
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx_ssl)
        )

    @staticmethod
    def _pem(section: dict, key: str) -> bytes:
        if f"{key}-data" in section:
            return base64.b64decode(section[f"{key}-data"])
        return Path(section[key]).read_bytes()

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=self._headers)
        try:
            with self._opener.open(req, timeout=timeout) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.load(e)
            except ValueError:
                return e.code, {}

    def create(self, obj: dict, timeout: float = 30) -> tuple[int, dict]:
        ns = obj["metadata"]["namespace"]
        return self.request("POST", f"/api/v1/namespaces/{ns}/{obj['kind'].lower()}s", obj, timeout)

    def get(self, path: str) -> dict:
        status, body = self.request("GET", path)
        if status != 200:
            raise NodeError(f"GET {path}: {status} {body.get('message', '')}")
        return body

    def raw(self, path: str, timeout: float = 10) -> str:
        req = urllib.request.Request(self.server + path, headers={k: v for k, v in self._headers.items() if k != "accept"})
        with self._opener.open(req, timeout=timeout) as r:
            return r.read().decode()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
