"""A real hawkBit-DDI rollout server on loopback, for the `bankctl poll --hawkbit` tests and `bankboot
hawkbit-lab`: goosebit (PyPI; FastAPI on SQLite), from its own venv (build/goosebit-venv, made by `make deps`
from requirements-goosebit.txt: its dependencies clash with bankboot's pins), run by uvicorn on a socket
bound here (no port race), with settings, database and artifacts in a temp dir of its own (goosebit would
otherwise read ./goosebit.yaml or /etc/goosebit.yaml and write inside its venv), and one admin for the
management API (`/api/v1`: upload software, assign it, read devices and their logs back).

Recipe and goosebit's quirks: /work/notes/goosebit.md (the lead's notes), docs/hawkbit.md."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from builder.errors import BuildError
from builder.paths import build_dir, checkout
from builder.run import stop_process

VENV_ENV = "BANKBOOT_GOOSEBIT_VENV"
SETTINGS = """\
poll_time: "{poll}"
logging:
  version: 1
  disable_existing_loggers: false
  formatters:
    simple: {{format: "%(asctime)s %(name)s %(levelname)s %(message)s"}}
  handlers:
    console: {{class: logging.StreamHandler, formatter: simple}}
  loggers:
    tortoise: {{level: WARNING}}
    aiosqlite: {{level: WARNING}}
    multipart: {{level: INFO}}
  root: {{level: INFO, handlers: [console]}}
"""


class GoosebitError(BuildError):
    pass


def venv() -> Path:
    """Where `make deps` puts goosebit: the checkout's build/ (not a test worker's BANKBOOT_BUILD)."""
    if os.environ.get(VENV_ENV):
        return Path(os.environ[VENV_ENV])
    root = checkout()
    return (root / "build" if root else build_dir()) / "goosebit-venv"


class Goosebit:
    """`with Goosebit() as gb:` a running server; gb.url, gb.ddi(controller), gb.api(method, path, body)."""

    def __init__(self, poll: str = "00:00:05", tenant: str = "DEFAULT", device_auth: str | None = None) -> None:
        self.poll, self.tenant, self.device_auth = poll, tenant, device_auth
        self.work = Path(tempfile.mkdtemp(prefix="bankboot-goosebit-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ddi(self, controller: str) -> str:
        return f"{self.url}/{self.tenant}/controller/v1/{controller}"

    def log_text(self) -> str:
        try:
            return (self.work / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Goosebit:
        v = venv()
        if not (v / "bin" / "uvicorn").exists():
            raise GoosebitError(f"goosebit is not installed in {v} (make deps: requirements-goosebit.txt; or set "
                                f"{VENV_ENV})")
        migrations = next((v / "lib").glob("python3*/site-packages/goosebit/db/migrations"), None)
        if migrations is None:
            raise GoosebitError(f"{v}: goosebit's migrations are not where goosebit 0.2 keeps them")
        (self.work / "goosebit.yaml").write_text(SETTINGS.format(poll=self.poll))
        (self.work / "aerich.toml").write_text('[tool.aerich]\ntortoise_orm = "goosebit.db.config.TORTOISE_CONF"\n'
                                               f'location = "{migrations}"\n')
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.work),
               "GOOSEBIT_SETTINGS": str(self.work / "goosebit.yaml"),
               "GOOSEBIT_DB_URI": f"sqlite://{self.work}/db.sqlite3",
               "GOOSEBIT_ARTIFACTS_DIR": str(self.work / "artifacts"),
               "GOOSEBIT_SECRET_KEY": uuid.uuid4().hex, "GOOSEBIT_TENANT": self.tenant}
        if self.device_auth:
            env.update({"GOOSEBIT_DEVICE_AUTH__ENABLE": "true", "GOOSEBIT_DEVICE_AUTH__MODE": self.device_auth})
        made = subprocess.run([str(v / "bin" / "aerich"), "--config", "aerich.toml", "upgrade"], cwd=self.work, env=env,
                              capture_output=True, text=True)
        if made.returncode != 0:
            raise GoosebitError(f"goosebit's schema (aerich upgrade) failed: {made.stdout[-1000:]}"
                                f"{made.stderr[-2000:]}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        log = open(self.work / "server.log", "wb")
        self.proc = subprocess.Popen([str(v / "bin" / "python"), "-m", "uvicorn", "goosebit:app", "--fd",
                                      str(sock.fileno()), "--timeout-graceful-shutdown", "3"], cwd=self.work, env=env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     pass_fds=(sock.fileno(),))
        sock.close()
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise GoosebitError(f"goosebit exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if self.request("GET", "/openapi.json", auth=False)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise GoosebitError(f"goosebit did not answer within 60 s:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        form = urllib.parse.urlencode({"username": "admin@bankboot.test", "password": uuid.uuid4().hex}).encode()
        status, body = self.request("POST", "/setup", form, {"Content-Type": "application/x-www-form-urlencoded"},
                                    auth=False)
        if status != 200:
            raise GoosebitError(f"goosebit's /setup answered {status}: {body[:300]!r}")
        self.token = json.loads(body)["access_token"]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        shutil.rmtree(self.work, ignore_errors=True)

    # -- the management API ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None,
                auth: bool = True) -> tuple[int, bytes]:
        hdrs = dict(headers or {})
        if auth:
            hdrs["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def api(self, method: str, path: str, body: object = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        status, raw = self.request(method, "/api/v1" + path, data, {"Content-Type": "application/json"})
        if status != 200:
            raise GoosebitError(f"goosebit {method} /api/v1{path}: HTTP {status}: {raw[:500]!r}")
        return json.loads(raw)

    def upload(self, swu: Path | None = None, url: str | None = None) -> int:
        """Software from a .swu file (multipart upload) or from a URL goosebit fetches once; its id."""
        boundary = uuid.uuid4().hex
        if swu is not None:
            head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{swu.name}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n").encode()
            data = head + swu.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        else:
            data = (f'--{boundary}\r\nContent-Disposition: form-data; name="url"\r\n\r\n{url}\r\n'
                    f"--{boundary}--\r\n").encode()
        status, raw = self.request("PUT", "/api/v1/software", data,
                                   {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise GoosebitError(f"goosebit refused the software ({swu or url}): HTTP {status}: {raw[:500]!r}")
        return int(json.loads(raw)["id"])

    def software(self) -> list[dict]:
        got = self.api("GET", "/software")
        assert isinstance(got, dict)
        return list(got["software"])

    def devices(self) -> dict[str, dict]:
        """Every device by id (the list: goosebit's per-device GET fails for Assigned devices)."""
        got = self.api("GET", "/devices")
        assert isinstance(got, dict)
        return {d["id"]: d for d in got["devices"]}

    def device_log(self, device: str) -> str:
        got = self.api("GET", f"/devices/{device}/log")
        assert isinstance(got, dict)
        return str(got.get("log") or "")

    def assign(self, devices: list[str], software: int | str) -> None:
        self.api("PATCH", "/devices", {"devices": devices, "software": str(software)})

    def patch(self, devices: list[str], **fields: object) -> None:
        self.api("PATCH", "/devices", {"devices": devices, **fields})

    def register(self, devices: list[str], **fields: object) -> None:
        """Create devices ahead of their first poll (PUT), e.g. with an auth_token."""
        self.api("PUT", "/devices", {"devices": devices, **fields})
