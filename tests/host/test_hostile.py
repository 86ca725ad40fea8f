"""Hostile links and servers between `bankctl stage URL` and a real nginx (a fault proxy of our own in
front, tests/netfaults.py): each case ends in a clear error of the right kind (transient or not) with
nothing staged and nothing broken on the banks partition, or in a completed stage that fetched little
twice."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from builder.lab.serve import Server
from overlay_layout.net.download import DownloadError, stage_url
from overlay_layout.net.transport import Settings
from overlay_layout.state import Banks
from tests.banks import DEV, install_first_image, make_bank
from tests.netfaults import FaultProxy, header, pump, replace_header

SIZE = 6 << 20


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    make_bank(root / "a.bank", "2.0.0", random.Random(1).randbytes(SIZE), chunked=True)
    with Server(root) as srv:
        yield srv


def banks_at(tmp_path: Path) -> Banks:
    install_first_image(tmp_path / "banks")
    return Banks(str(tmp_path / "banks"))


def stage(banks: Banks, url: str, retries: int = 1, timeout: float = 20.0, said: list[str] | None = None, **kw):
    settings = Settings(retries=retries, timeout=timeout, connect_timeout=2, environ={},
                        say=(said.append if said is not None else None))
    return stage_url(banks, url, DEV, "9.9.9", machine="x86_64", settings=settings, **kw)


def untouched(banks: Banks, resumable: bool) -> None:
    """Nothing staged; a download directory only when something verified is in it (for the resume)."""
    lay = banks.layout
    assert lay.pointer("next") is None and lay.images() == ["1.0.0-base"] and lay.pointer("current") == "1.0.0-base"
    left = [n for n in os.listdir(lay.overlay) if n.startswith(".")]
    assert not [n for n in left if n.startswith(".staging-")], left
    downloads = [n for n in left if n.startswith(".download-")]
    assert bool(downloads) is resumable, left


def from_request(n: int, fault):
    """A fault for the n-th request on (1: the manifest, 2: chunk index, 3: the squashfs), plain before."""
    def apply(request, answer, up, client, state) -> bool:
        if int(state["requests"]) < n:
            return FaultProxy.plain(request, answer, up, client, state)
        return fault(request, answer, up, client, state)
    return apply


def test_a_server_that_drips_a_byte_a_second_times_out_and_the_next_stage_resumes(served, tmp_path: Path) -> None:
    def drip(request, answer, up, client, state) -> bool:
        client.sendall(answer)
        if not state.get("dripped"):  # the first time 2 MB at full speed, then (and on retries) 8 bytes a second
            state["dripped"] = pump(up, client, state, limit=2 << 20)
        pump(up, client, state, limit=64, rate=8)
        return False

    banks = banks_at(tmp_path)
    with FaultProxy(("127.0.0.1", served.port), from_request(3, drip)) as proxy, \
            pytest.raises(DownloadError, match=r"sent \d+ bytes in 1 s .*gave up after 1 retries.*resumes") as e:
        stage(banks, proxy.url("a.bank"), timeout=1)
    assert e.value.transient
    untouched(banks, resumable=True)
    manifest, stats = stage(banks, served.url("a.bank"))
    assert banks.layout.pointer("next") == manifest["id"] and stats.resumed > 0
    assert stats.received < SIZE + (1 << 20)


def test_a_header_without_end_is_refused_at_once(served, tmp_path: Path) -> None:
    def endless(request, answer, up, client, state) -> bool:
        client.sendall(b"HTTP/1.1 206 Partial Content\r\nX-Padding: ")
        for _ in range(200):
            client.sendall(b"a" * 1024)
        return False

    banks = banks_at(tmp_path)
    with FaultProxy(("127.0.0.1", served.port), endless) as proxy, \
            pytest.raises(DownloadError, match="a header of more than 64 KiB without an end") as e:
        stage(banks, proxy.url("a.bank"), retries=3)
    assert not e.value.transient and proxy.state["requests"] == 1  # not retried: it would say the same
    untouched(banks, resumable=False)


def test_a_wrong_content_range_is_refused_and_leaves_nothing(served, tmp_path: Path) -> None:
    def shifted(request, answer, up, client, state) -> bool:
        first, _, rest = header(answer, "Content-Range").removeprefix("bytes ").partition("-")
        client.sendall(replace_header(answer, "Content-Range", f"bytes {int(first) + 512}-{rest}"))
        pump(up, client, state)
        return False

    banks = banks_at(tmp_path)
    with FaultProxy(("127.0.0.1", served.port), from_request(3, shifted)) as proxy, \
            pytest.raises(DownloadError, match=r"asked for bytes \d+-\d+, the server sent bytes \d+-\d+") as e:
        stage(banks, proxy.url("a.bank"))
    assert not e.value.transient
    untouched(banks, resumable=False)


def test_a_body_shorter_than_announced_is_retried_from_the_byte_reached(served, tmp_path: Path) -> None:
    def short(request, answer, up, client, state) -> bool:
        client.sendall(answer)
        pump(up, client, state, limit=(1 << 20) + 777)  # then the connection ends
        return False

    said: list[str] = []
    banks = banks_at(tmp_path)
    with FaultProxy(("127.0.0.1", served.port), from_request(3, lambda *a: _once(short, *a))) as proxy:
        manifest, stats = stage(banks, proxy.url("a.bank"), retries=2, said=said)
    assert banks.layout.pointer("next") == manifest["id"]
    assert any("bytes before the end of the answer's body; retrying" in s for s in said), said
    assert stats.received < manifest["size"] + (100 << 10), stats.line()  # the chunk in flight, twice


def _once(fault, request, answer, up, client, state) -> bool:
    if state.get("faulted"):
        return FaultProxy.plain(request, answer, up, client, state)
    state["faulted"] = True
    return fault(request, answer, up, client, state)


def test_a_link_that_drops_every_megabyte_completes(served, tmp_path: Path) -> None:
    def drop(request, answer, up, client, state) -> bool:
        client.sendall(answer)
        pump(up, client, state, limit=1 << 20)
        return False

    said: list[str] = []
    banks = banks_at(tmp_path)
    with FaultProxy(("127.0.0.1", served.port), drop) as proxy:
        manifest, stats = stage(banks, proxy.url("a.bank"), retries=2, said=said)
    assert banks.layout.pointer("next") == manifest["id"]
    assert sum("retrying in" in s for s in said) >= 5, said
    assert stats.received < manifest["size"] * 1.05, stats.line()


def test_a_redirect_loop_and_too_many_redirects_are_named(served, tmp_path: Path) -> None:
    def loop(request, answer, up, client, state) -> bool:
        target = request.split(b" ")[1].decode()
        where = "/b.bank" if target.startswith("/a") else "/a.bank"
        client.sendall(f"HTTP/1.1 302 Found\r\nLocation: {where}\r\nContent-Length: 0\r\n\r\n".encode())
        return True

    def chain(request, answer, up, client, state) -> bool:
        n = int(request.split(b" ")[1].decode().strip("/").removeprefix("hop") or 0)
        client.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: /hop{n + 1}\r\nContent-Length: 0\r\n\r\n"
                       .encode())
        return True

    banks = banks_at(tmp_path)
    with FaultProxy(("127.0.0.1", served.port), loop) as proxy, \
            pytest.raises(DownloadError, match=r"a redirect loop \(.*/a.bank -> .*/b.bank -> .*/a.bank\)"):
        stage(banks, proxy.url("a.bank"))
    with FaultProxy(("127.0.0.1", served.port), chain) as proxy, \
            pytest.raises(DownloadError, match="more than 10 redirects"):
        stage(banks, proxy.url("hop0"))
    untouched(banks, resumable=False)


def test_a_file_replaced_mid_download_starts_again_with_the_new_one(served, tmp_path: Path) -> None:
    make_bank(served.root / "a.bank", "2.0.0", random.Random(3).randbytes(20 << 20), chunked=True)  # > one request
    new_payload = random.Random(2).randbytes(SIZE)
    staging = tmp_path / "next.bank"
    new_id = make_bank(staging, "2.1.0", new_payload, chunked=True)

    def replace(done: int, total: int) -> None:
        if done > total // 3 and staging.exists():
            os.replace(staging, served.root / "a.bank")  # the release is re-published under the same name

    said: list[str] = []
    banks = banks_at(tmp_path)
    manifest, _ = stage(banks, served.url("a.bank"), progress=replace, said=said)
    assert manifest["id"] == new_id and banks.layout.pointer("next") == new_id
    assert Path(banks.layout.squashfs(new_id)).read_bytes()[4:] == new_payload  # never a mix of the two
    assert any("changed during the download (its ETag went from" in s for s in said), said
    assert not [n for n in os.listdir(banks.layout.overlay) if n.startswith(".download-")]


@pytest.mark.parametrize("status", [416, 501])
def test_servers_that_refuse_ranges_with_416_or_501_are_read_as_one_stream(served, tmp_path: Path,
                                                                           status: int) -> None:
    def refuse(request, answer, up, client, state) -> bool:
        if header(request, "Range") is None:
            return FaultProxy.plain(request, answer, up, client, state)
        client.sendall(f"HTTP/1.1 {status} No\r\nContent-Length: 0\r\n\r\n".encode())
        return True

    said: list[str] = []
    banks = banks_at(tmp_path)
    with FaultProxy(("127.0.0.1", served.port), refuse) as proxy:
        manifest, stats = stage(banks, proxy.url("a.bank"), said=said)
    assert banks.layout.pointer("next") == manifest["id"]
    assert any(f"does not do byte ranges (it {'refused' if status == 416 else 'answered'}" in s for s in said), said
    size = (served.root / "a.bank").stat().st_size
    assert size - 2048 <= stats.received < size + (16 << 10), stats.line()  # the file once (less its end blocks)
