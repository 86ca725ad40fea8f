"""A real container registry on loopback for the tests: Debian's docker-registry (the CNCF distribution
registry) with its storage in a temporary directory, started by the test and stopped after it, optionally
behind basic auth (htpasswd). Images go in with skopeo, as a CI job would push them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from builder.run import find_tool

# bcrypt of "bankboot-test" (cost 4: the registry checks it on every request).
HTPASSWD = "tester:$2b$04$DvNEV0saoVF0atOWc7qp.O6uDzKXA9IMxW8pImgb7yfjvkAfbBjNi\n"
STARTUP = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, root: Path, auth: bool = False, token_auth: str = "") -> None:
        """auth: basic auth (htpasswd); token_auth: a config.yml `auth:` section (tests/tokens.py)."""
        self.root, self.auth, self.token_auth = root, auth, token_auth
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        # skopeo talks to it over plain HTTP when registries.conf says so (CONTAINERS_REGISTRIES_CONF).
        self.registries_conf = root / "registries.conf"
        self.registries_conf.write_text(f'[[registry]]\nlocation = "{self.host}"\ninsecure = true\n')

    def __enter__(self) -> Registry:
        auth = ""
        if self.auth:
            (self.root / "htpasswd").write_text(HTPASSWD)
            auth = f"auth:\n  htpasswd:\n    realm: bankboot-test\n    path: {self.root / 'htpasswd'}\n"
        auth = auth or self.token_auth
        config = self.root / "config.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: "
                          f"{self.root / 'data'}\n  delete:\n    enabled: true\nhttp:\n  addr: {self.host}\n{auth}")
        log = open(self.root / "registry.log", "wb")  # the child has its own copy once started
        self.proc = subprocess.Popen([find_tool("docker-registry", "docker-registry"), "serve", str(config)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + STARTUP
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2).close()
                break
            except urllib.error.HTTPError as e:  # 401: up, and asking for credentials
                if e.code == 401 and (self.auth or self.token_auth):
                    break
                raise
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    said = (self.root / "registry.log").read_text()
                    raise RuntimeError(f"docker-registry did not start:\n{said}") from None
                time.sleep(0.1)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def env(self) -> dict[str, str]:
        return {"CONTAINERS_REGISTRIES_CONF": str(self.registries_conf)}

    def push(self, source: str, name: str) -> str:
        """Copy an image (a skopeo reference: oci:DIR:NAME) into the registry; its docker:// reference."""
        creds = ["--dest-creds", "tester:bankboot-test"] if self.auth else []
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *creds, source,
                        f"docker://{self.host}/{name}"], check=True, capture_output=True)
        return f"docker://{self.host}/{name}"
