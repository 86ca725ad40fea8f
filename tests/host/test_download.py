"""`bankctl stage URL` against Debian's nginx on a loopback port (builder/lab/serve.py): full, resumed and
delta downloads, and the errors a person meets."""

from __future__ import annotations

import functools
import http.server
import itertools
import os
import random
import threading
from pathlib import Path

import pytest

from builder.lab.serve import Server, free_port
from overlay_layout import chunks
from overlay_layout.net.download import stage_url
from overlay_layout.net.transport import Settings
from overlay_layout.stage import StageError
from overlay_layout.state import Banks
from overlay_layout.trust import Policy
from tests.banks import DEV, install_first_image, make_bank
from tests.netfaults import ForwardProxy


def payload(seed: int, size: int = 3 << 20) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    with Server(root) as srv:
        yield srv


def banks_at(tmp_path: Path) -> Banks:
    install_first_image(tmp_path / "banks")
    return Banks(str(tmp_path / "banks"))


def stage(banks: Banks, url: str, policy: Policy = DEV, **kw):
    settings = Settings(retries=kw.pop("retries", 1), say=kw.pop("say", None), timeout=kw.pop("timeout", 20.0),
                        tls=kw.pop("tls", None), environ=kw.pop("environ", {}))
    return stage_url(banks, url, policy, "9.9.9", machine="x86_64", settings=settings, **kw)


def test_full_download_becomes_next_with_its_chunk_index(served: Server, tmp_path: Path) -> None:
    image = make_bank(served.root / "a.bank", "2.0.0", payload(1), chunked=True)
    banks = banks_at(tmp_path)
    manifest, stats = stage(banks, served.url("a.bank"))
    assert manifest["id"] == image and banks.layout.pointer("next") == image
    lay = banks.layout
    assert Path(lay.squashfs(image)).read_bytes()[4:] == payload(1)
    assert (Path(lay.image_dir(image)) / "rootfs.chunks").is_file()
    assert stats.network == manifest["size"] and stats.local == stats.resumed == 0
    assert not [n for n in os.listdir(lay.overlay) if n.startswith(".download-")]


@pytest.mark.parametrize("chunked", [True, False])
def test_an_interrupted_download_resumes_and_never_becomes_next(served: Server, tmp_path: Path,
                                                                chunked: bool) -> None:
    image = make_bank(served.root / "a.bank", "2.0.0", payload(2, 6 << 20), chunked=chunked)
    banks = banks_at(tmp_path)

    def cut(done: int, total: int) -> None:  # Ctrl-C at half-way
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stage(banks, served.url("a.bank"), progress=cut)
    assert banks.layout.pointer("next") is None and image not in banks.layout.images()
    assert os.path.isdir(os.path.join(banks.layout.overlay, f".download-{image}"))
    manifest, stats = stage(banks, served.url("a.bank"))
    assert banks.layout.pointer("next") == image
    assert stats.resumed >= manifest["size"] // 2 - (2 << 20)  # what was fsynced before the cut
    assert stats.network + stats.resumed == manifest["size"]
    assert Path(banks.layout.squashfs(image)).read_bytes()[4:] == payload(2, 6 << 20)


def test_only_changed_chunks_come_from_the_network(served: Server, tmp_path: Path) -> None:
    old = payload(3, 8 << 20)
    new = old[:3 << 20] + b"a changed config file" + old[(3 << 20) + 100:]
    first = make_bank(served.root / "old.bank", "2.0.0", old, chunked=True)
    make_bank(served.root / "new.bank", "2.1.0", new, chunked=True)
    banks = banks_at(tmp_path)
    stage(banks, served.url("old.bank"))
    banks.mark_good(first)  # boots, commits: current holds the old chunks
    manifest, stats = stage(banks, served.url("new.bank"))
    assert stats.network < 600 << 10, stats.line()
    assert stats.local + stats.network == manifest["size"]
    assert Path(banks.layout.squashfs(manifest["id"])).read_bytes()[4:] == new


def test_a_damaged_local_chunk_is_fetched_instead(served: Server, tmp_path: Path) -> None:
    old = payload(4, 4 << 20)
    first = make_bank(served.root / "old.bank", "2.0.0", old, chunked=True)
    make_bank(served.root / "new.bank", "2.1.0", old + b"more", chunked=True)
    banks = banks_at(tmp_path)
    stage(banks, served.url("old.bank"))
    banks.mark_good(first)
    with open(banks.layout.squashfs(first), "r+b") as f:  # a bad block in the installed image
        f.seek(1 << 20)
        f.write(b"\0" * 4096)
    manifest, stats = stage(banks, served.url("new.bank"))
    assert 0 < stats.network < 1 << 20 and banks.layout.pointer("next") == manifest["id"]


def test_a_changed_file_on_the_server_is_refused_chunk_by_chunk(served: Server, tmp_path: Path) -> None:
    make_bank(served.root / "a.bank", "2.0.0", payload(5), chunked=True)
    data = bytearray((served.root / "a.bank").read_bytes())
    data[len(data) // 2] ^= 1
    (served.root / "a.bank").write_bytes(bytes(data))
    banks = banks_at(tmp_path)
    with pytest.raises(StageError, match="does not match the signed chunk index"):
        stage(banks, served.url("a.bank"))
    assert banks.layout.pointer("next") is None


def test_errors_name_what_is_wrong(served: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    banks = banks_at(tmp_path)
    with pytest.raises(StageError, match=r"not found \(HTTP 404\)"):
        stage(banks, served.url("missing.bank"))
    (served.root / "junk.bank").write_bytes(os.urandom(5000))
    with pytest.raises(StageError, match="not a bank file"):
        stage(banks, served.url("junk.bank"))
    with pytest.raises(StageError, match=r"cannot reach 127.0.0.1:\d+.*gave up after 1 retries"):
        stage(banks, f"http://127.0.0.1:{free_port()}/a.bank")
    make_bank(served.root / "unsigned.bank", "2.0.0", payload(6))
    with pytest.raises(StageError, match="is not signed"):
        stage(banks, served.url("unsigned.bank"), policy=Policy({}, False, False))
    real = os.statvfs

    class Full:  # the banks partition with 1 MB free
        def __init__(self, path: str) -> None:
            st = real(path)
            self.f_frsize, self.f_bavail = st.f_frsize, (1 << 20) // st.f_frsize

    make_bank(served.root / "big.bank", "2.0.0", payload(6))
    monkeypatch.setattr(os, "statvfs", Full)
    with pytest.raises(StageError, match=r"not enough space on the banks partition: [\d.]+ MB needed"):
        stage(banks, served.url("big.bank"))
    monkeypatch.undo()
    make_bank(served.root / "arm.bank", "2.0.0", payload(6), arch="arm64")
    with pytest.raises(StageError, match="arm64 image; this machine is amd64"):
        stage(banks, served.url("arm.bank"))
    assert banks.layout.pointer("next") is None


@pytest.fixture
def no_ranges(tmp_path: Path):
    """Python's http.server: no Range at all (every answer is the whole file), HTTP/1.0."""
    root = tmp_path / "plain"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
        srv.shutdown()


def test_a_server_without_ranges_sends_the_file_once(no_ranges, tmp_path: Path) -> None:
    root, base = no_ranges
    image = make_bank(root / "a.bank", "2.0.0", payload(7), chunked=True)
    said: list[str] = []
    banks = banks_at(tmp_path)
    manifest, stats = stage(banks, f"{base}/a.bank", say=said.append)
    assert manifest["id"] == image and banks.layout.pointer("next") == image
    assert any("does not do byte ranges (it answered `Range: bytes=0-65535` with 200" in s for s in said), said
    size = (root / "a.bank").stat().st_size
    assert size - 10240 <= stats.received <= size + 1024 and stats.requests == 1, stats.line()  # less tar padding


def test_a_server_without_ranges_is_not_asked_for_a_whole_file_to_resume_a_little(no_ranges, tmp_path: Path) -> None:
    root, base = no_ranges
    image = make_bank(root / "a.bank", "2.0.0", payload(8, 6 << 20), chunked=True)
    banks = banks_at(tmp_path)

    def cut(done: int, total: int) -> None:
        if done > total * 3 // 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stage(banks, f"{base}/a.bank", progress=cut)
    with pytest.raises(StageError, match=r"does not do byte ranges .* needs [\d.]+ MB more, but the server can only "
                                         r"send the whole file again .*--whole-file") as e:
        stage(banks, f"{base}/a.bank")
    assert not e.value.transient and banks.layout.pointer("next") is None
    assert os.path.isdir(os.path.join(banks.layout.overlay, f".download-{image}"))  # kept for a better server
    _, stats = stage(banks, f"{base}/a.bank", whole_file=True)
    assert banks.layout.pointer("next") == image and stats.resumed > 0


def test_one_kept_alive_connection_and_runs_with_small_gaps_in_one_request(served: Server, tmp_path: Path) -> None:
    old = b"hsqs" + payload(9, 8 << 20)
    starts = list(itertools.accumulate([0] + [n for n, _ in chunks.index_of(old)]))
    k = next(k for k in range(100, len(starts) - 4) if starts[k + 3] - starts[k + 1] < 48 << 10)
    new = bytearray(old)
    # one byte in the middle of chunks far apart, and of two chunks with less than 48 KiB between them
    pair = [(starts[k] + starts[k + 1]) // 2, (starts[k + 3] + starts[k + 4]) // 2]
    for at in [*range(1 << 20, 7 << 20, 1 << 20), *pair]:
        new[at] ^= 0xFF
    first = make_bank(served.root / "old.bank", "2.0.0", old, chunked=True)
    make_bank(served.root / "new.bank", "2.1.0", bytes(new), chunked=True)
    counts = {}
    for gap in (0, 64 << 10):
        banks = banks_at(tmp_path / f"gap-{gap}")
        stage(banks, served.url("old.bank"))
        banks.mark_good(first)
        before = len(served.requests())
        manifest, stats = stage(banks, served.url("new.bank"), gap=gap)
        log = served.requests()[before:]
        assert Path(banks.layout.squashfs(manifest["id"])).read_bytes() == bytes(new)
        assert len({line.split("conn=")[1].split()[0] for line in log}) == 1, log  # one connection
        assert stats.requests == len(log) and stats.connections == 1, stats.line()
        counts[gap] = (len(log), stats.network, stats.gap)
    assert counts[64 << 10][0] == counts[0][0] - 1, counts  # the close pair went in one request
    assert 0 < counts[64 << 10][2] < 64 << 10 and counts[0][2] == 0, counts  # for less than 64 KiB fetched twice


def test_proxies_from_the_environment_as_curl(served: Server, tmp_path: Path) -> None:
    make_bank(served.root / "a.bank", "2.0.0", payload(10), chunked=True)
    with ForwardProxy() as proxy:
        env = {"http_proxy": f"127.0.0.1:{proxy.port}"}
        stage(banks_at(tmp_path / "via"), served.url("a.bank"), environ=env)
        assert proxy.seen and all(line == f"GET {served.url('a.bank')}" for line in proxy.seen), proxy.seen
        proxy.seen.clear()
        stage(banks_at(tmp_path / "direct"), served.url("a.bank"), environ={**env, "no_proxy": "localhost,127.0.0.0/8"})
        assert proxy.seen == []


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Serves one file by ranges, but breaks the first answers off after 1 MB (a link that drops)."""

    data = b""
    breaks = 2

    def do_GET(self) -> None:
        first, _, last = self.headers.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")
        start, end = int(first), int(last) if last else len(self.data) - 1
        body = self.data[start:end + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(self.data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if len(body) > 2 << 20 and _Flaky.breaks:
            _Flaky.breaks -= 1
            self.wfile.write(body[:1 << 20])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_dropped_connection_is_retried_from_the_byte_reached(tmp_path: Path) -> None:
    bank = tmp_path / "a.bank"
    image = make_bank(bank, "2.0.0", payload(8, 6 << 20), chunked=True)
    _Flaky.data = bank.read_bytes()
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        said: list[str] = []
        banks = banks_at(tmp_path)
        manifest, stats = stage(banks, f"http://127.0.0.1:{srv.server_address[1]}/a.bank", retries=3,
                                say=said.append)
        srv.shutdown()
    assert banks.layout.pointer("next") == image and _Flaky.breaks == 0
    assert sum("retrying in" in s for s in said) == 2
    # every byte of the file came once, plus what the two breaks cut short of a whole chunk
    assert manifest["size"] <= stats.received <= len(_Flaky.data) + 2 * (64 << 10)
