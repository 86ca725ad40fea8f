"""`bankctl stage https://...` against Debian's nginx with TLS and a test CA made with openssl: what works
(the CA given, a client certificate where the server requires one, CONNECT through a proxy) and the
errors a device meets, each naming the cause: an unknown CA, another host's certificate, an expired or
not yet valid one, a client certificate missing, refused or with the wrong key, a plain-HTTP port. Also
the kit's TLS piece for this machine's architecture, loaded the way the frozen bankctl loads it."""

from __future__ import annotations

import os
import random
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from builder.arch import get_arch
from builder.lab.serve import Server, ServeTls
from builder.pysysroot import locate_sysroot
from builder.tls import make_ca, make_cert, tls_piece
from overlay_layout.contract import arch_of_machine
from overlay_layout.net.download import DownloadError, stage_url
from overlay_layout.net.tls import TlsOptions
from overlay_layout.net.transport import Settings
from overlay_layout.state import Banks
from tests.banks import DEV, install_first_image, make_bank
from tests.netfaults import ForwardProxy


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d / "ca")
    return {
        "ca": ca,
        "server": make_cert(ca, d, "server", ("127.0.0.1", "localhost")),
        "other-host": make_cert(ca, d, "other-host", ("updates.example",)),
        "expired": make_cert(ca, d, "expired", ("127.0.0.1",), start="20200101000000Z", end="20210101000000Z"),
        "future": make_cert(ca, d, "future", ("127.0.0.1",), start="20900101000000Z", end="20910101000000Z"),
        "device": make_cert(ca, d, "device", client=True),
        "other-ca": make_ca(d / "other", "another CA"),
    }


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    make_bank(root / "a.bank", "2.0.0", random.Random(1).randbytes(2 << 20), chunked=True)
    return root


def stage(tmp_path: Path, url: str, ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
          environ: dict[str, str] | None = None):
    install_first_image(tmp_path / "banks")
    banks = Banks(str(tmp_path / "banks"))
    tls = TlsOptions(ca=str(ca) if ca else None, cert=str(cert) if cert else None, key=str(key) if key else None)
    return stage_url(banks, url, DEV, "9.9.9", machine="x86_64",
                     settings=Settings(retries=0, tls=tls, environ=environ or {}))


def test_https_with_the_ca_and_through_a_proxy(pki, www: Path, tmp_path: Path) -> None:
    with Server(www, tls=ServeTls(*pki["server"])) as srv:
        _, stats = stage(tmp_path / "1", srv.url("a.bank"), ca=pki["ca"][0])
        assert stats.connections == 1 and stats.requests == 3, stats.line()
        with ForwardProxy() as proxy:
            stage(tmp_path / "2", srv.url("a.bank", host="localhost"), ca=pki["ca"][0],
                  environ={"https_proxy": f"http://127.0.0.1:{proxy.port}"})
        assert proxy.seen == [f"CONNECT localhost:{srv.port}"]  # one tunnel, TLS end to end inside it


@pytest.mark.parametrize("cert, host, ca, error", [
    ("server", "127.0.0.1", "other-ca", r"not signed by a CA this device trusts \(CA bundle .*other/ca.pem"),
    ("server", "127.0.0.1", None, r"not signed by a CA this device trusts \(CA bundle /etc/ssl/certs/ca-certificates"),
    ("other-host", "127.0.0.1", "ca", r"certificate is for another host name \(IP address mismatch"),
    ("server", "[::1]", "ca", r"certificate is for another host name"),
    ("expired", "127.0.0.1", "ca", r"certificate has expired, by this device's clock .*if that clock is wrong"),
    ("future", "127.0.0.1", "ca", r"certificate is not valid yet, by this device's clock"),
])
def test_certificates_a_device_refuses(pki, www: Path, tmp_path: Path, cert: str, host: str, ca: str | None,
                                       error: str) -> None:
    bind = "::1" if host.startswith("[") else "127.0.0.1"
    with Server(www, bind=bind, tls=ServeTls(*pki[cert])) as srv, pytest.raises(DownloadError, match=error) as e:
        stage(tmp_path, srv.url("a.bank"), ca=pki[ca][0] if ca else None)
    assert not e.value.transient
    assert not [n for n in os.listdir(tmp_path / "banks/overlay") if n.startswith(".download-")]


def test_client_certificates_with_nginx(pki, www: Path, tmp_path: Path) -> None:
    tls = ServeTls(*pki["server"], client_ca=pki["ca"][0])
    ca = pki["ca"][0]
    with Server(www, tls=tls) as srv:
        url = srv.url("a.bank")
        with pytest.raises(DownloadError, match=r"\(HTTP 400: No required SSL certificate was sent\); if the server "
                                                r"wants a client certificate, give one with --cert and --key"):
            stage(tmp_path / "none", url, ca=ca)
        stranger = make_cert(pki["other-ca"], tmp_path, "stranger", client=True)
        with pytest.raises(DownloadError, match=r"HTTP 400: The SSL certificate error\); the server may have refused "
                                                r"this device's client certificate .*stranger.pem"):
            stage(tmp_path / "stranger", url, ca=ca, cert=stranger[0], key=stranger[1])
        with pytest.raises(DownloadError, match="does not belong to the certificate"):
            stage(tmp_path / "mixed", url, ca=ca, cert=pki["device"][0], key=stranger[1])
        manifest, _ = stage(tmp_path / "ok", url, ca=ca, cert=pki["device"][0], key=pki["device"][1])
    assert manifest["version"] == "2.0.0"


def test_a_server_that_refuses_the_client_in_the_handshake(pki, www: Path, tmp_path: Path) -> None:
    """A TLS 1.3 server that requires a client certificate ends the handshake with an alert (nginx answers
    400 instead): the alert is named."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki["server"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki["ca"][0])
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/a.bank"
    with pytest.raises(DownloadError, match=r"wants a client certificate and this device gave none \(TLSV13_ALERT_CE"):
        stage(tmp_path / "a", url, ca=pki["ca"][0])
    stranger = make_cert(pki["other-ca"], tmp_path, "stranger", client=True)
    with pytest.raises(DownloadError, match=r"refused this device's client certificate .*stranger.pem \(TLSV1_ALERT"):
        stage(tmp_path / "b", url, ca=pki["ca"][0], cert=stranger[0], key=stranger[1])
    listener.close()


def test_https_to_a_plain_http_port(www: Path, tmp_path: Path) -> None:
    with Server(www) as srv, pytest.raises(DownloadError, match=r"does not speak TLS on that port .*http://"):
        stage(tmp_path, srv.url("a.bank").replace("http://", "https://"))


LOADER = """
import sys
class Refuse:  # this Python's own ssl is not there, as in the frozen bankctl
    def find_spec(self, name, path=None, target=None):
        if name in ("ssl", "_ssl"):
            raise ImportError(name)
sys.meta_path.insert(0, Refuse())
from initfs.tlskit import load_tls
from overlay_layout.contract import InitramfsConf
from overlay_layout.net.tls import TlsOptions
from overlay_layout.net.transport import RemoteFile, Settings
conf = InitramfsConf(tls=sys.argv[2])
tls = TlsOptions(ca=sys.argv[4], load=lambda: load_tls(conf, "/", "/", sys.argv[1]))
remote = RemoteFile(sys.argv[3], Settings(tls=tls, environ={}))
data = remote.read(0, 512)
import ssl
print(ssl.OPENSSL_VERSION, type(sys.modules["_ssl"].__loader__).__name__, len(data))
"""


def test_the_kits_tls_piece_loads_from_memory(pki, www: Path, tmp_path: Path) -> None:
    """The piece for this machine's architecture, found in an image's /boot/bankboot, checked against the
    sha256 the kit names, loaded from memfds: https works without the interpreter's own ssl."""
    from overlay_layout.net.tlspiece import digest

    piece = tls_piece(locate_sysroot(get_arch(arch_of_machine(os.uname().machine).debian)))
    image = tmp_path / "image"
    (image / "boot/bankboot").mkdir(parents=True)
    (image / "boot/bankboot/initramfs.tls").write_bytes(piece)
    with Server(www, tls=ServeTls(*pki["server"])) as srv:
        run = [sys.executable, "-c", LOADER, str(image), digest(piece), srv.url("a.bank"), str(pki["ca"][0])]
        proc = subprocess.run(run, capture_output=True, text=True, cwd=Path(__file__).parents[2], check=False)
        assert proc.returncode == 0 and "OpenSSL 3" in proc.stdout and "ExtensionFileLoader 512" in proc.stdout, \
            proc.stdout + proc.stderr
        wrong = run.copy()
        wrong[4] = "0" * 64
        proc = subprocess.run(wrong, capture_output=True, text=True, cwd=Path(__file__).parents[2], check=False)
        assert proc.returncode != 0 and "is another build's (sha256" in proc.stderr, proc.stderr
