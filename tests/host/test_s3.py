"""`bankctl stage URL` from a real S3 object store (SeaweedFS's S3 gateway on loopback, builder/lab/s3store.py):
a public-read bucket holding a multipart upload, a presigned URL (its signature in the query), and an
update server that redirects each device to a fresh presigned URL on the store (another host): later
requests go straight to the store, and back to the update server when the presigned URL has expired."""

from __future__ import annotations

import http.server
import random
import threading
import time
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from builder.lab.s3store import SeaweedS3
from overlay_layout.net.download import DownloadError, stage_url
from overlay_layout.net.transport import Settings
from overlay_layout.state import Banks
from tests.banks import DEV, install_first_image, make_bank


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    bank = tmp_path_factory.mktemp("s3") / "a.bank"
    image = make_bank(bank, "2.0.0", random.Random(1).randbytes(20 << 20), chunked=True)
    with SeaweedS3() as s3:
        s3.public_bucket("fleet")
        s3.client.upload_file(str(bank), "fleet", "releases/a.bank",  # three parts of 8 MB at most
                              Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20))
        s3.client.create_bucket(Bucket="private")
        s3.client.upload_file(str(bank), "private", "a.bank")
        yield s3, image, bank.stat().st_size


def stage(tmp_path: Path, url: str, said: list[str] | None = None, **kw):
    install_first_image(tmp_path / "banks")
    settings = Settings(retries=1, environ={}, say=said.append if said is not None else None)
    return stage_url(Banks(str(tmp_path / "banks")), url, DEV, "9.9.9", machine="x86_64", settings=settings, **kw)


def test_a_public_bucket_on_one_connection(store, tmp_path: Path) -> None:
    s3, image, size = store
    manifest, stats = stage(tmp_path, s3.url("fleet", "releases/a.bank"))
    assert manifest["id"] == image and stats.connections == 1 and stats.received < size + (64 << 10), stats.line()


def test_a_presigned_url_and_its_expiry(store, tmp_path: Path) -> None:
    s3, image, _ = store
    with pytest.raises(DownloadError, match=r"/private/a.bank: forbidden \(HTTP 403"):
        stage(tmp_path / "anonymous", s3.url("private", "a.bank"))
    manifest, _ = stage(tmp_path / "signed", s3.presigned("private", "a.bank"))
    assert manifest["id"] == image
    url = s3.presigned("private", "a.bank", seconds=1)
    time.sleep(2)
    with pytest.raises(DownloadError, match=r"forbidden \(HTTP 403: AccessDenied") as e:
        stage(tmp_path / "expired", url)
    assert not e.value.transient and "X-Amz-Signature" not in str(e.value)  # no signature in messages


class _UpdateServer(http.server.BaseHTTPRequestHandler):
    """Sends every device to a presigned URL of the store that lives `seconds`."""

    s3: SeaweedS3
    seconds = 600
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(302)
        self.send_header("Location", self.s3.presigned("private", "a.bank", self.seconds))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirect_to_the_store_and_back_when_the_link_expires(store, tmp_path: Path) -> None:
    s3, image, _ = store
    _UpdateServer.s3, _UpdateServer.hits, _UpdateServer.seconds = s3, 0, 600
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _UpdateServer) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{srv.server_address[1]}/devices/42/update.bank"
        manifest, stats = stage(tmp_path / "fresh", url)
        assert manifest["id"] == image and _UpdateServer.hits == 1 and stats.connections == 2, stats.line()
        _UpdateServer.hits, _UpdateServer.seconds = 0, 2

        def slow(done: int, total: int) -> None:  # the presigned URL expires during the download
            if done < 7 << 20:  # the first request (8 MB) takes 3 s or more
                time.sleep(0.01)

        said: list[str] = []
        manifest, _ = stage(tmp_path / "expiring", url, said=said, progress=slow, gap=0)
        srv.shutdown()
    assert manifest["id"] == image and _UpdateServer.hits >= 2, said
