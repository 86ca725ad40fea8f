"""Bad input to `bankctl poll`, case by case (docs/fleet.md has the table): each ends in a clear message and
exit code, and nothing on the device changes (every file of its banks partition compared before and after).
The channel lives on Debian's nginx on loopback, the misbehaving servers are Python's http.server."""

from __future__ import annotations

import argparse
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.lab.serve import Server
from builder.publish import publish
from initfs.poll import Options
from initfs.pollcmd import run_poll
from overlay_layout.net.channel import make_document
from overlay_layout.utctime import format_utc
from tests.fleet import BOARD, Release, bank_fields, make_device, snapshot

ARGS = argparse.Namespace(every=None, reboot_command="true", jitter=0.2)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
    return Release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Release:
    return Release(tmp_path_factory.mktemp("other"))  # a key the devices do not trust


def document(release: Release, seed: bytes | None = None, **over: object) -> bytes:
    bank = release.banks["1.1.0"]
    return make_document({**bank_fields(bank, release.ids["1.1.0"]), **over}, seed or release.seed)


def poll_rc(root: Path, release: Release, url: str, capsys, **kw) -> tuple[int, str]:
    """bankctl poll's exit code, and what it printed (stderr, then stdout)."""
    capsys.readouterr()
    rc = run_poll(lambda: make_device(root, release), Options(url, **kw), ARGS)
    out = capsys.readouterr()
    return rc, out.err + out.out


def unsigned(release: Release) -> bytes:
    d = json.loads(document(release))
    del d["signatures"]
    return json.dumps(d).encode()


CASES = {
    "unsigned": (unsigned, 4, "refused: the channel document .* is not signed"),
    "signed by an unknown key": (lambda r, o: document(r, o.seed), 4, "is signed by key [0-9a-f]+, which this device "
                                                                      "does not trust"),
    "expired": (lambda r: document(r, published=format_utc(time.time() - 7200),
                                   expires=format_utc(time.time() - 3600)), 4, "expired at"),
    "for another board": (lambda r: document(r, boards=["raspberrypi3"]), 4, "is for board raspberrypi3; this device "
                                                                             "is qemu-aarch64"),
    "below the version floor": (lambda r: document(r, version="0.9.0"), 4, "offers 0.9.0, below this device's "
                                                                          "anti-rollback floor 1.0.0"),
    "above what it may replace": (lambda r: document(r, min_version="1.0.5"), 4, "replaces only 1.0.5 and newer; "
                                                                                "this device runs 1.0.0"),
    "pointing at a missing file": (lambda r: document(r, bank="banks/nothing.bank"), 4,
                                   "refused: .*/banks/nothing.bank: not found \\(HTTP 404\\)"),
    "a bank whose manifest disagrees": (lambda r: document(r, image=r.ids["1.2.0"], version="1.2.0"), 4,
                                        "does not match the channel document: its manifest is image 1.1.0-"),
    "a bank re-signed after publishing": (lambda r: document(r, manifest="0" * 64), 4,
                                          "its manifest is not the one the channel document signs"),
    "a bank of another size": (lambda r: document(r, size=12345), 4, "is [0-9]+ bytes; the channel document says "
                                                                     "12345"),
    "no document (404)": (lambda r: None, 4, r"refused: http://127\.0\.0\.1:\d+/stable\.json: not found \(HTTP 404\)"),
    "not JSON": (lambda r: b'{"format": 1, "kind": "bankboot-channel", ', 4, "is not a channel document: not JSON"),
    "10 MB": (lambda r: b" " * (10 << 20), 4, "refused: .*: the server sends 10.5 MB; this file is at most 64 KiB"),
    "HTML": (lambda r: b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>", 4, "is an HTML page, "
                                                                                              "not a channel document"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_channel_document(case: str, release: Release, other: Release, tmp_path: Path, capsys) -> None:
    make, code, message = CASES[case]
    www = tmp_path / "www"
    (www / "banks").mkdir(parents=True)
    shutil.copyfile(release.banks["1.1.0"], www / "banks" / f"{release.ids['1.1.0']}.bank")
    raw = make(release, other) if case == "signed by an unknown key" else make(release)
    if raw is not None:
        (www / "stable.json").write_bytes(raw)
    root = tmp_path / "dev"
    make_device(root, release)
    before = snapshot(root)
    with Server(www) as srv:
        rc, err = poll_rc(root, release, srv.url("stable.json"), capsys)
    assert rc == code, err
    assert re.search(message, err), err
    assert snapshot(root) == before
    print(f"\n| {case} | {err.strip().splitlines()[-1]} | exit {rc} |")


class Misbehaving(http.server.BaseHTTPRequestHandler):
    """/401, /500, /204, /html: what a server in the way of a fleet answers."""

    hits: list[str] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        status = {"/401": 401, "/500": 500, "/204": 204}.get(self.path, 200)
        body = b"" if status == 204 else b"<html><head><title>Oops</title></head><body>no</body></html>"
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="fleet"')
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def misbehaving():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.mark.parametrize("path, code, message", [
    ("/401", 4, r"refused: http://127\.0\.0\.1:\d+/401: needs authorisation \(HTTP 401: Oops\)"),
    ("/500", 4, r"failed: http://127\.0\.0\.1:\d+/500: the server failed \(HTTP 500: Oops\)"),
    ("/html", 4, r"refused: http://127\.0\.0\.1:\d+/html is an HTML page"),
    ("/204", 0, "the server has nothing for this device \\(204 No Content\\)"),
])
def test_a_server_that_answers(path: str, code: int, message: str, misbehaving: str, release: Release,
                               tmp_path: Path, capsys) -> None:
    root = tmp_path / "dev"
    make_device(root, release)
    before = snapshot(root)
    rc, err = poll_rc(root, release, misbehaving + path, capsys, channel="stable")
    assert rc == code and re.search(message, err), err
    if path != "/204":  # a 204 is a poll that found nothing to do: the poll state records it
        assert snapshot(root) == before


def test_a_poll_while_a_stage_runs(release: Release, tmp_path: Path, capsys) -> None:
    www = tmp_path / "www"
    www.mkdir()
    publish(release.banks["1.1.0"], "stable", str(www), release.key, [BOARD])
    root = tmp_path / "dev"
    make_device(root, release)
    with Server(www, rate="200k") as slow:
        bank = slow.url(f"banks/{release.ids['1.1.0']}.bank")
        stager = subprocess.Popen([sys.executable, "-c", f"""
import sys
from tests.fleet import Release, make_device
from overlay_layout.lock import lock_banks
from overlay_layout.net.download import stage_url
from pathlib import Path
release = Release(Path({str(release.root)!r}))
dev = make_device(Path({str(root)!r}), release)
with lock_banks(dev.banks.root):
    def progress(done, total):
        print("staging", flush=True)
    stage_url(dev.banks, {bank!r}, release.policy, "9.9.9", machine="aarch64", progress=progress,
              settings=dev.settings)
"""], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
        try:
            assert stager.stdout is not None and stager.stdout.readline().strip() == "staging"
            rc, err = poll_rc(root, release, slow.url("stable.json"), capsys)
            assert rc == 5 and "another bankctl (a poll, a stage) is working on the banks partition" in err, err
            assert not [r for r in slow.fleet_log() if r["uri"] == "/stable.json"]
        finally:
            stager.kill()
            stager.wait()
