"""A registry under an ECR host name, for the kubelet's pulls: the Docker Registry HTTP API v2
over TLS, serving one image, and only to Basic credentials AWS:<password> with exactly the
password the test expects (the token the webhook wrote). Like ECR: a request without
credentials gets 401 with a Basic challenge; one with other credentials gets 401 too. It counts
both kinds of refusal and the requests it served, so a test sees what containerd sent.

The image is one layer holding a static binary as /app (the webhook's own, run as `/app
--version`), so a pod that pulled it can also run it to completion."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import io
import json
import socketserver
import ssl
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    manifest: bytes
    blobs: dict[str, bytes]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def image_of(binary: Path) -> Image:
    """An OCI image: `binary` as /app, run as 65532:65532."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo("app")
        info.size = binary.stat().st_size
        info.mode = 0o755
        with binary.open("rb") as f:
            t.addfile(info, f)
    diff = raw.getvalue()
    layer = gzip.compress(diff, compresslevel=1, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/app"], "User": "65532:65532"},
            "rootfs": {"type": "layers", "diff_ids": [sha256(diff)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)}],
        }
    ).encode()
    return Image(manifest, {sha256(config): config, sha256(layer): layer})


@dataclass
class Counts:
    served: int = 0
    no_credentials: int = 0
    wrong_credentials: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {"served": self.served, "no_credentials": self.no_credentials, "wrong_credentials": self.wrong_credentials}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # Without http.server's reverse-DNS lookup of the bind address.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class Registry:
    def __init__(self, host: str, cert: Path, key: Path, repository: str, tag: str, image: Image):
        self.expected: str | None = None  # the one password accepted; None: nothing is
        self.counts = Counts()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's name
                self._serve(body=True)

            def do_HEAD(self):  # noqa: N802
                self._serve(body=False)

            def _serve(self, body: bool):
                if not self._authorised():
                    return
                path = self.path.split("?", 1)[0]
                if path in ("/v2/", "/v2"):
                    self._send(200, b"{}", "application/json", body)
                    return
                prefix = f"/v2/{repository}/"
                if not path.startswith(prefix):
                    self._send(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', "application/json", body)
                    return
                kind, _, ref = path[len(prefix):].partition("/")
                if kind == "manifests" and ref in (tag, image.digest):
                    registry.counts.add("served")
                    self._send(200, image.manifest, OCI_MANIFEST, body, image.digest)
                elif kind == "blobs" and ref in image.blobs:
                    registry.counts.add("served")
                    self._send(200, image.blobs[ref], "application/octet-stream", body, ref)
                else:
                    self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', "application/json", body)

            def _authorised(self) -> bool:
                header = self.headers.get("authorization", "")
                if not header.startswith("Basic "):
                    registry.counts.add("no_credentials")
                    self._refuse()
                    return False
                try:
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    user, password = "", ""
                want = registry.expected
                if user != "AWS" or want is None or not hmac.compare_digest(password, want):
                    registry.counts.add("wrong_credentials")
                    self._refuse()
                    return False
                return True

            def _refuse(self):
                data = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                self.send_response(401)
                self.send_header("www-authenticate", 'Basic realm="ecr-token-webhook node tier"')
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send(self, status: int, data: bytes, ctype: str, body: bool, digest: str = ""):
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.send_header("docker-distribution-api-version", "registry/2.0")
                if digest:
                    self.send_header("docker-content-digest", digest)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = _Server((host, 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="registry", daemon=True)

    def start(self) -> "Registry":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
