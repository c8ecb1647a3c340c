"""The real-node tier: the webhook installed from the project's own manifests onto a real
Kubernetes node (kubelet, containerd, runc, CNI, kube-proxy), its image built from a static
binary, AWS served by the suite's fake ECR on the address pods reach this machine at, and a
registry under an ECR host name that accepts exactly the token the webhook wrote.

    ECR_TOKEN_WEBHOOK_NODE_KIT=../shared/k8s/node .venv/bin/python -m pytest -q tests/node   # as root

or, on a kind cluster with the image from the Dockerfile loaded (.github/workflows/node.yml):

    ECR_TOKEN_WEBHOOK_NODE_KIND=NAME ECR_TOKEN_WEBHOOK_NODE_IMAGE=IMAGE ECR_TOKEN_WEBHOOK_NODE_BIN=BINARY pytest tests/node

ECR_TOKEN_WEBHOOK_NODE_BIN is a static x86-64 build of the binary (default
target/x86_64-unknown-linux-gnu/release/ecr-token-webhook, the kit README's static glibc
build). scripts/test.sh runs the tier when one of the two is named. Named but broken, it fails;
nothing here skips. The node is stopped at the end (KitNode) whatever happened. The figures the
issue asks for (boot, install, pull latency, writes during a rolling restart, leader hand-over)
are printed at the end of the run.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

HERE = Path(__file__).resolve().parent
# The API-server tier's fake ECR, certificates and names, and the manifest tests' helpers, are
# reused, not copied.
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "kube"))
sys.path.insert(0, str(HERE.parent / "manifests"))

from checks import FIGURES, figure  # noqa: E402
from cluster import CA, write  # noqa: E402
from fake_ecr import FakeEcr  # noqa: E402
from install import Kubectl  # noqa: E402
from manifest_checks import REPO_ROOT, find_kubectl  # noqa: E402
from nodes import BIN_ENV, Api, KitNode, NodeError, node_from_env  # noqa: E402
from registry import Registry, image_of  # noqa: E402
from tier import NAMESPACE, REGISTRY, TOKEN_LIFETIME_SECONDS  # noqa: E402

# Logs attached to a failed test's report.
_LOG_SOURCES: list[Callable[[], str]] = []


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("node tier figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _LOG_SOURCES:
        texts = []
        for src in _LOG_SOURCES:
            try:
                texts.append(src())
            except Exception as e:  # noqa: BLE001 - a log we cannot read must not hide the failure
                texts.append(f"(log unavailable: {e})")
        report.sections.append(("node tier logs", "\n".join(texts)))


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    try:
        n = node_from_env(tmp_path_factory.mktemp("node"))
    except NodeError as e:
        pytest.fail(str(e), pytrace=False)
    started = time.monotonic()
    try:
        try:
            n.start()
        except NodeError as e:
            pytest.fail(f"cannot start {n.describe()}: {e}", pytrace=False)
        figure("boot", f"{time.monotonic() - started:.1f}s ({n.describe()})")
        _LOG_SOURCES.append(n.logs)
        yield n
    finally:
        # Whatever happened: the kit's stop.sh leaves the machine as it was.
        n.stop()


@pytest.fixture(scope="session")
def kubectl(node) -> Kubectl:
    return Kubectl(find_kubectl(), node.kubeconfig)


@pytest.fixture(scope="session")
def api(node) -> Iterator[Api]:
    a = Api(node.kubeconfig)
    yield a
    a.close()


@pytest.fixture(scope="session", autouse=True)
def webhook_logs(kubectl):
    """The webhook pods' last log lines, on a failure."""

    def logs() -> str:
        p = kubectl(
            "-n", NAMESPACE, "logs", "-l", "app.kubernetes.io/name=ecr-token-webhook",
            "--prefix", "--tail=12", "--all-containers", check=False, timeout=60,
        )
        events = kubectl("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp", check=False, timeout=60)
        return f"--- webhook pods\n{p.stdout}{p.stderr}\n--- events in {NAMESPACE}\n{events.stdout[-3000:]}"

    _LOG_SOURCES.append(logs)
    yield
    _LOG_SOURCES.remove(logs)


def static_binary() -> Path:
    """The static x86-64 binary the image is made of; a dynamic one would not start on a
    FROM-scratch (or distroless/static) image."""
    named = os.environ.get(BIN_ENV)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    path = Path(named) if named else target / "x86_64-unknown-linux-gnu" / "release" / "ecr-token-webhook"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{path} is missing: build it with RUSTFLAGS='-C target-feature=+crt-static' cargo build --release "
            f"--locked --target x86_64-unknown-linux-gnu, or set {BIN_ENV}",
            pytrace=False,
        )
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or struct.unpack_from("<H", head, 18)[0] != 62:
            pytest.fail(f"{path} is not a 64-bit x86-64 ELF executable", pytrace=False)
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    types = [struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum)]
    if 3 in types:  # PT_INTERP: it needs a dynamic loader
        pytest.fail(f"{path} is dynamically linked; the image needs a static binary", pytrace=False)
    return path


@pytest.fixture(scope="session")
def binary() -> Path:
    return static_binary()


@pytest.fixture(scope="session")
def image(node, binary) -> str:
    """The webhook's image, in the node: built here on the kit, from the Dockerfile on kind."""
    if isinstance(node, KitNode):
        started = time.monotonic()
        try:
            node.build_and_load_image(binary)
        except NodeError as e:
            pytest.fail(f"cannot build or load the image: {e}", pytrace=False)
        figure("image", f"built and loaded in {time.monotonic() - started:.1f}s ({node.image})")
    return node.image


@pytest.fixture(scope="session")
def ecr(node) -> Iterator[FakeEcr]:
    e = FakeEcr(TOKEN_LIFETIME_SECONDS, host=node.host_ip).start()
    yield e
    e.stop()


@pytest.fixture(scope="session")
def registry(node, binary, tmp_path_factory) -> Iterator[Registry]:
    """A registry for REGISTRY (an ECR host name) on this machine, mapped into the node's
    containerd, serving one image, app:1."""
    d = tmp_path_factory.mktemp("registry")
    ca = CA("ecr-token-webhook-node-tier-registry-ca")
    # containerd checks the certificate against the address in the mapped URL.
    pair = ca.issue(REGISTRY, ips=(node.host_ip,), dns=(REGISTRY,), server=True)
    ca_file = write(d / "ca.crt", ca.cert_pem, 0o644)
    cert = write(d / "tls.crt", pair.cert_pem, 0o644)
    key = write(d / "tls.key", pair.key_pem)
    reg = Registry(node.host_ip, cert, key, "app", "1", image_of(binary)).start()
    try:
        try:
            node.map_registry(REGISTRY, reg.url, ca_file)
        except NodeError as e:
            pytest.fail(f"cannot map {REGISTRY} to {reg.url}: {e}", pytrace=False)
        yield reg
    finally:
        try:
            node.unmap_registry(REGISTRY)
        except NodeError:
            pass
        reg.stop()
