"""`bankboot serve DIR`: bank files over HTTP for devices to stage from (`bankctl stage URL`), with Debian's
nginx (byte ranges, so interrupted downloads resume and devices fetch only the chunks they lack). The tests
start the same server on a loopback port. nginx runs as one foreground process with everything (config, pid,
logs, temp files) in a work directory, so it needs no system configuration and leaves nothing behind."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path

from builder.run import find_tool


class ServeError(RuntimeError):
    pass


def nginx_config(root: Path, bind: str, port: int, work: Path, rate: str | None = None) -> str:
    """rate: nginx's limit_rate per connection (say "2m"), to play a slow link."""
    temps = "".join(f"    {kind}_temp_path {work}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                             "uwsgi", "scgi"))
    return (f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {work}/nginx.pid;\n"
            f"error_log {work}/error.log warn;\nevents {{ worker_connections 64; }}\n"
            f"http {{\n    access_log {work}/access.log;\n{temps}"
            f"    default_type application/octet-stream;\n    sendfile on;\n"
            f"    server {{\n        listen {bind}:{port};\n        root {root.resolve()};\n        autoindex on;\n"
            f"{f'        limit_rate {rate};{chr(10)}' if rate else ''}    }}\n}}\n")


def free_port(bind: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((bind, 0))
        return int(s.getsockname()[1])


class Server:
    """nginx serving `root` on bind:port until stop(); `with Server(...) as srv: srv.url("x.bank")`."""

    def __init__(self, root: Path, port: int = 0, bind: str = "127.0.0.1", rate: str | None = None) -> None:
        if not root.is_dir():
            raise ServeError(f"{root} is not a directory")
        self.root, self.bind, self.rate = root, bind, rate
        self.port = port or free_port(bind)
        self.work = Path(tempfile.mkdtemp(prefix="bankboot-serve-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        nginx = find_tool("nginx", "nginx-light", ServeError)
        conf = self.work / "nginx.conf"
        conf.write_text(nginx_config(self.root, self.bind, self.port, self.work, self.rate))
        self.proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(self.work), "-e", str(self.work / "error.log")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace").strip()
                log = (self.work / "error.log").read_text() if (self.work / "error.log").exists() else ""
                raise ServeError(f"nginx did not start on {self.bind}:{self.port}: {err or log}")
            try:
                socket.create_connection((self.bind, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ServeError(f"nginx did not answer on {self.bind}:{self.port}")

    def url(self, name: str, host: str | None = None) -> str:
        return f"http://{host or self.bind}:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def requests(self) -> list[str]:
        """The access log's lines: what devices asked for (with the status and bytes sent)."""
        log = self.work / "access.log"
        return log.read_text().splitlines() if log.exists() else []

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)


def serve(root: Path, port: int, bind: str, rate: str | None = None) -> int:
    """Serve until Ctrl-C (or SIGTERM), saying how a device reaches each bank file; nginx stops with it."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Server(root, port, bind, rate) as srv:
        banks = sorted(p.name for p in root.glob("*.bank"))
        print(f"serving {root} on http://{bind}:{srv.port}/ (Ctrl-C stops)")
        guest = "10.0.2.2" if bind in ("127.0.0.1", "0.0.0.0") else bind
        for name in banks or ["<file>.bank"]:
            print(f"  on a device:  bankctl stage {srv.url(name, guest)}")
        if bind in ("127.0.0.1", "0.0.0.0"):
            print("  (10.0.2.2 is this host as a QEMU guest on user-mode networking sees it)")
        try:
            assert srv.proc is not None
            return srv.proc.wait()
        except KeyboardInterrupt:
            return 0
