"""`bankboot serve DIR`: bank files over HTTP or HTTPS for devices to stage from (`bankctl stage URL`), with
Debian's nginx (byte ranges, so interrupted downloads resume and devices fetch only the chunks they lack;
kept-alive connections). The tests start the same server on a loopback port. nginx runs as one foreground
process with everything (config, pid, logs, temp files) in a work directory, so it needs no system
configuration and leaves nothing behind.

`--tls` serves HTTPS with a certificate signed by a test CA made on first use (build/serve-tls/ca.pem,
which devices are given with `bankctl stage --ca`); `--client-ca FILE` also requires a client certificate
signed by that CA (mTLS). A device certificate signed by the test CA is made beside it for trying that."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path

from builder.errors import BuildError
from builder.run import find_tool, stop_process


class ServeError(BuildError):
    pass


class ServeTls:
    """HTTPS settings: the server's certificate and key (PEM), and the CA client certificates must be
    signed by (None: no client certificate asked for)."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca


# What the tests read back: the request, its status and bytes, which connection and its how-manyth request.
LOG_FORMAT = '$remote_addr "$request" $status $body_bytes_sent conn=$connection n=$connection_requests'
# What a fleet's server learns of each request (the headers `bankctl poll` sends, initfs/identity.py), one JSON
# object a line: the fleet lab and simulation count requests and bytes per device from it.
FLEET_LOG_FORMAT = ('{"time":$msec,"device":"$http_bankboot_device","board":"$http_bankboot_board",'
                    '"image":"$http_bankboot_image","version":"$http_bankboot_version",'
                    '"state":"$http_bankboot_state","fallback":"$http_bankboot_fallback","uri":"$uri",'
                    '"status":$status,"sent":$bytes_sent,"body":$body_bytes_sent,"received":$request_length,'
                    '"conn":$connection}')


def nginx_config(root: Path, bind: str, port: int, work: Path, rate: str | None = None,
                 tls: ServeTls | None = None) -> str:
    """rate: nginx's limit_rate per connection (say "2m"), to play a slow link."""
    temps = "".join(f"    {kind}_temp_path {work}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                             "uwsgi", "scgi"))
    listen = f"[{bind}]" if ":" in bind else bind
    ssl = ""
    if tls is not None:
        ssl = (f"        ssl_certificate {tls.cert.resolve()};\n        ssl_certificate_key {tls.key.resolve()};\n"
               f"        ssl_protocols TLSv1.2 TLSv1.3;\n")
        if tls.client_ca is not None:
            ssl += f"        ssl_client_certificate {tls.client_ca.resolve()};\n        ssl_verify_client on;\n"
    return (f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {work}/nginx.pid;\n"
            f"error_log {work}/error.log warn;\nevents {{ worker_connections 64; }}\n"
            f"http {{\n    log_format bankboot '{LOG_FORMAT}';\n    access_log {work}/access.log bankboot;\n"
            f"    log_format fleet escape=json '{FLEET_LOG_FORMAT}';\n    access_log {work}/fleet.log fleet;\n{temps}"
            f"    default_type application/octet-stream;\n    sendfile on;\n"
            f"    server {{\n        listen {listen}:{port}{' ssl' if tls else ''};\n{ssl}"
            f"        root {root.resolve()};\n        autoindex on;\n"
            f"{f'        limit_rate {rate};{chr(10)}' if rate else ''}    }}\n}}\n")


def free_port(bind: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as s:
        s.bind((bind, 0))
        return int(s.getsockname()[1])


class Server:
    """nginx serving `root` on bind:port until stop(); `with Server(...) as srv: srv.url("x.bank")`."""

    def __init__(self, root: Path, port: int = 0, bind: str = "127.0.0.1", rate: str | None = None,
                 tls: ServeTls | None = None) -> None:
        if not root.is_dir():
            raise ServeError(f"{root} is not a directory")
        self.root, self.bind, self.rate, self.tls = root, bind, rate, tls
        self.port = port or free_port(bind)
        self.work = Path(tempfile.mkdtemp(prefix="bankboot-serve-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        nginx = find_tool("nginx", "nginx-light", ServeError)
        conf = self.work / "nginx.conf"
        conf.write_text(nginx_config(self.root, self.bind, self.port, self.work, self.rate, self.tls))
        self.proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(self.work), "-e", str(self.work / "error.log")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace").strip()
                log = (self.work / "error.log").read_text() if (self.work / "error.log").exists() else ""
                raise ServeError(f"nginx did not start on {self.bind}:{self.port}: {err or log}")
            try:
                socket.create_connection((self.bind.strip("[]"), self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ServeError(f"nginx did not answer on {self.bind}:{self.port}")

    def url(self, name: str, host: str | None = None) -> str:
        host = host or self.bind
        return f"{'https' if self.tls else 'http'}://{f'[{host}]' if ':' in host else host}:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    def requests(self) -> list[str]:
        """The access log's lines: what devices asked for (with the status and bytes sent)."""
        log = self.work / "access.log"
        return log.read_text().splitlines() if log.exists() else []

    def fleet_log(self) -> list[dict]:
        """The JSON access log's records (FLEET_LOG_FORMAT), oldest first."""
        import json

        log = self.work / "fleet.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)


def test_tls(directory: Path, hosts: tuple[str, ...]) -> ServeTls:
    """A test CA, a server certificate for `hosts` and a device's client certificate in `directory`, made
    once and kept (the CA is what devices are given)."""
    from builder.tls import make_ca, make_cert

    ca = (directory / "ca.pem", directory / "ca.key")
    if not ca[0].is_file():
        ca = make_ca(directory, "bankboot serve test CA")
    stamp = directory / "server.hosts"
    if not (directory / "server.pem").is_file() or not stamp.is_file() or stamp.read_text() != ",".join(hosts):
        make_cert(ca, directory, "server", hosts)
        stamp.write_text(",".join(hosts))
    if not (directory / "device.pem").is_file():
        make_cert(ca, directory, "device", client=True)
    return ServeTls(directory / "server.pem", directory / "server.key")


def serve(root: Path, port: int, bind: str, rate: str | None = None, tls: bool = False,
          cert: Path | None = None, key: Path | None = None, client_ca: Path | None = None) -> int:
    """Serve until Ctrl-C (or SIGTERM), saying how a device reaches each bank file; nginx stops with it."""
    import signal
    import sys

    from builder.paths import build_dir

    settings = None
    guest = "10.0.2.2" if bind in ("127.0.0.1", "0.0.0.0") else bind
    if tls or cert or client_ca:
        if cert:
            settings = ServeTls(cert, key or cert)
        else:
            settings = test_tls(build_dir() / "serve-tls", tuple(sorted({bind, guest, "127.0.0.1", "localhost",
                                                                         socket.gethostname()} - {"0.0.0.0"})))
        settings.client_ca = client_ca
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Server(root, port, bind, rate, settings) as srv:
        banks = sorted(p.name for p in root.glob("*.bank"))
        print(f"serving {root} on {srv.url('', bind)} (Ctrl-C stops)")
        ca = "" if settings is None or cert else f" --ca {settings.cert.parent / 'ca.pem'}"
        client = ""
        if client_ca is not None:
            client = f" --cert {settings.cert.parent / 'device.pem'} --key {settings.cert.parent / 'device.key'}" \
                if settings is not None and not cert else " --cert DEVICE.pem --key DEVICE.key"
        for name in banks or ["<file>.bank"]:
            print(f"  on a device:  bankctl stage{ca}{client} {srv.url(name, guest)}")
        if ca or client:
            print("  (copy those files to the device first, e.g. to /userdata; on a device in the field the CA "
                  "comes with the board file's network.ca)")
        if bind in ("127.0.0.1", "0.0.0.0"):
            print("  (10.0.2.2 is this host as a QEMU guest on user-mode networking sees it)")
        try:
            assert srv.proc is not None
            return srv.proc.wait()
        except KeyboardInterrupt:
            return 0
