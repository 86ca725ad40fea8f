"""A registry token service for the tests (what auth.docker.io is to Docker Hub): the distribution
registry started with `auth: token` sends clients here for a JWT, which this service signs (ES256, with a
self-signed P-256 certificate made by openssl, carried in the token's x5c header and trusted by the
registry as its rootcertbundle). `public`: anyone gets a pull token (an anonymous pull); otherwise only a
token minted by the test (`mint`) opens the repository."""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

ISSUER = "bankboot-test-issuer"
SERVICE = "bankboot-test-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_signature(der: bytes) -> bytes:
    """An ECDSA signature as JWS wants it (r || s, 32 bytes each), from openssl's DER SEQUENCE of two INTEGERs."""
    assert der[0] == 0x30
    pos = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[pos] == 0x02
        n = der[pos + 1]
        out += der[pos + 2:pos + 2 + n].lstrip(b"\0").rjust(32, b"\0")
        pos += 2 + n
    return out


class TokenService:
    def __init__(self, root: Path, public: bool = True, host: str = "127.0.0.1") -> None:
        """host: how the registry's clients reach this service (10.0.2.2 from a QEMU guest)."""
        self.root, self.public, self.host = root, public, host
        root.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = root / "token.key", root / "token.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(self.key), "-out", str(self.cert), "-days", "2", "-subj",
                        "/CN=bankboot-test-token"], check=True, capture_output=True)
        self.der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                                  capture_output=True).stdout
        self.asked: list[dict[str, str]] = []  # the query of every token request
        self.server: http.server.ThreadingHTTPServer | None = None

    def mint(self, repository: str, actions: list[str], lifetime: int = 300) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.der).decode()]}
        claims = {"iss": ISSUER, "sub": "tester", "aud": SERVICE, "exp": now + lifetime, "nbf": now - 60,
                  "iat": now, "jti": os.urandom(8).hex(),
                  "access": [{"type": "repository", "name": repository, "actions": actions}]}
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing.encode(),
                             check=True, capture_output=True).stdout
        return f"{signing}.{_b64url(_raw_signature(der))}"

    @property
    def realm(self) -> str:
        assert self.server is not None
        return f"http://{self.host}:{self.server.server_address[1]}/token"

    def registry_auth(self) -> str:
        """The registry's config.yml `auth:` section for this service."""
        return (f"auth:\n  token:\n    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
                f"    rootcertbundle: {self.cert}\n")

    def __enter__(self) -> TokenService:
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                service.asked.append(query)
                scope = query.get("scope", "")
                parts = scope.split(":")
                if not service.public or len(parts) != 3 or parts[0] != "repository":
                    body, status = b'{"errors":[{"code":"UNAUTHORIZED"}]}', 401
                else:  # an anonymous pull of anything; never a push
                    body, status = json.dumps({"token": service.mint(parts[1], ["pull"])}).encode(), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
