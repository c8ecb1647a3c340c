"""A minimal local ECR endpoint for load runs: answers GetAuthorizationToken with a 12-hour,
~2 KB token. The Rust test suite has its own, richer one (tests/it/common/mod.rs)."""
import base64
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TARGET = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("x-amz-target") != TARGET:
            self.send_response(400)
            self.end_headers()
            return
        token = base64.b64encode(b"AWS:" + b"L" * 2000).decode()
        body = json.dumps({"authorizationData": [{
            "authorizationToken": token,
            "expiresAt": time.time() + 12 * 3600,
            "proxyEndpoint": "https://123456789012.dkr.ecr.us-east-1.amazonaws.com",
        }]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/x-amz-json-1.1")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
