"""A local ECR endpoint for the real-API-server tier (AWS_ENDPOINT_URL_ECR): answers
GetAuthorizationToken in ECR's JSON protocol with a NEW short-lived token on every call, and
remembers what it issued so the tests can tell which token a secret holds and that a refresh
brought a new one. Runs in a thread of the test process.

The load and benchmark scripts run it as a program, with realistic ~2 KB tokens that live 12
hours: `python3 tests/kube/fake_ecr.py PORT` serves on 127.0.0.1:PORT until killed. (The Rust
tests have their own in tests/it/common/mod.rs: one fake ECR per language.)"""

from __future__ import annotations

import base64
import json
import secrets
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TARGET = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"


@dataclass(frozen=True)
class Issued:
    password: str
    expires_at: int  # Unix seconds (whole: the webhook writes expires-at to the second)
    region: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # http.server's own bind looks the address up in reverse DNS (socket.getfqdn), which for
        # the node tier's bridge address (tests/node) would ask the machine's resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class FakeEcr:
    """`host` is where it listens: 127.0.0.1 for a webhook on this machine, the node's bridge
    address for one in a pod (tests/node)."""

    def __init__(self, lifetime_seconds: int, host: str = "127.0.0.1", port: int = 0, token_bytes: int = 0):
        self.lifetime = lifetime_seconds
        # Real ECR passwords are about 2 KB; the tests' short ones are easier to read in failures.
        self.token_bytes = token_bytes
        self._issued: list[Issued] = []
        # Regions whose calls ECR refuses (AccessDeniedException, not retried), for the alerts.
        self.refused_regions: set[str] = set()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("x-amz-target") != TARGET:
                    self._answer(400, {"__type": "UnknownOperationException"})
                    return
                # The region is in the SigV4 scope: Credential=KEY/DATE/REGION/ecr/aws4_request.
                auth = self.headers.get("authorization", "")
                region = auth.split("Credential=", 1)[-1].split("/")[2] if "Credential=" in auth else ""
                if region in fake.refused_regions:
                    self._answer(400, {"__type": "AccessDeniedException", "message": f"refused for {region} by the test"})
                    return
                issued = fake._issue(region)
                token = base64.b64encode(f"AWS:{issued.password}".encode()).decode()
                self._answer(
                    200,
                    {
                        "authorizationData": [
                            {
                                "authorizationToken": token,
                                "expiresAt": issued.expires_at,
                                "proxyEndpoint": f"https://123456789012.dkr.ecr.{region}.amazonaws.com",
                            }
                        ]
                    },
                )

            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/x-amz-json-1.1")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = _Server((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-ecr", daemon=True)

    def _issue(self, region: str) -> Issued:
        password = f"fake-ecr-{secrets.token_urlsafe(24)}"
        issued = Issued(
            password=password.ljust(self.token_bytes, "L"),
            expires_at=int(time.time()) + self.lifetime,
            region=region,
        )
        with self._lock:
            self._issued.append(issued)
        return issued

    def start(self) -> "FakeEcr":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def issued(self) -> list[Issued]:
        with self._lock:
            return list(self._issued)

    def find(self, password: str) -> Issued | None:
        """The issued token with this password, if this server issued it."""
        return next((i for i in self.issued() if i.password == password), None)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python3 tests/kube/fake_ecr.py PORT")
    FakeEcr(12 * 3600, port=int(sys.argv[1]), token_bytes=2000).server.serve_forever()
