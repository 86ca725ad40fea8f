"""`bankctl poll` against a channel published by `bankboot publish` into a directory that Debian's nginx
serves on loopback: a device stages a release once (only the chunks it lacks), then costs the server one
304 per poll; it never polls on trial, unconfirmed, inhibited or while another bankctl holds the lock; an
image that failed on it is not tried again and its headers say why; --download-only and apply. Counted on
nginx's own log of each request (builder/lab/serve.py: the headers the device sent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.lab.serve import Server
from builder.publish import publish
from initfs.poll import NotNow
from overlay_layout import bootlog, pollstate
from overlay_layout.lock import LockError
from overlay_layout.net.downloaded import apply, find
from overlay_layout.state import Banks
from tests.fleet import BOARD, Release, make_device, poll, snapshot


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
    return Release(tmp_path_factory.mktemp("release"))


@pytest.fixture
def channel(tmp_path: Path, release: Release):
    www = tmp_path / "www"
    www.mkdir()
    with Server(www) as srv:
        yield srv


def published(srv: Server, release: Release, version: str, **kw) -> str:
    publish(release.banks[version], "stable", str(srv.root), release.key, [BOARD], **kw)
    return srv.url("stable.json")


def test_a_device_stages_a_release_once_and_then_costs_one_short_answer(channel: Server, release: Release,
                                                                        tmp_path: Path) -> None:
    url = published(channel, release, "1.0.0")
    dev = make_device(tmp_path / "dev", release)
    said: list[str] = []
    first = poll(dev, url, said)
    assert first.action == "nothing" and "up to date: 1.0.0" in first.summary, said
    published(channel, release, "1.1.0")
    said.clear()
    got = poll(dev, url, said)
    image = release.ids["1.1.0"]
    assert got.action == "staged" and dev.banks.layout.pointer("next") == image, said
    announced = int(next(line for line in said if line.startswith("fetching")).split()[1])
    fetched = float(next(line for line in said if line.startswith("fetched:")).split()[1])
    log = [r for r in channel.fleet_log() if r["uri"].endswith(".bank")]
    assert announced < 0.1 * release.banks["1.1.0"].stat().st_size, said  # only what changed
    # exact: the image's bytes it then fetched (after the read-ahead of the manifest and the chunk index)
    assert announced == sum(r["body"] for r in log[2:]) and abs(fetched * 1e6 - announced) < 0.06e6, (said, log)
    assert {r["device"] for r in channel.fleet_log()} == {dev_id(dev)} and {r["version"] for r in log} == {"1.0.0"}
    before = len(channel.fleet_log())
    again = poll(dev, url)
    assert again.action == "pending" and again.requests == 1 and again.received < 400
    assert [r["status"] for r in channel.fleet_log()[before:]] == [304]
    Banks(dev.banks.root).mark_good(image)  # the trial came up and committed itself
    dev = make_device(tmp_path / "dev", release)
    idle = poll(dev, url)
    assert idle.action == "nothing" and "up to date: 1.1.0" in idle.summary and idle.requests == 1
    last = channel.fleet_log()[-1]
    assert (last["status"], last["version"], last["image"], last["state"]) == (304, "1.1.0", image, "committed")


def dev_id(dev) -> str:
    from initfs.identity import device_id

    return device_id(dev.root) or ""


def test_nothing_is_asked_while_the_device_is_not_ready(channel: Server, release: Release, tmp_path: Path) -> None:
    url = published(channel, release, "1.1.0")
    root = tmp_path / "dev"
    dev = make_device(root, release)
    current = dev.banks.layout.pointer("current")
    # a 1.2.0 trial was staged and is running now
    from overlay_layout.stage import stage

    m = stage(dev.banks, str(release.banks["1.2.0"]), release.policy, "9.9.9", machine="aarch64")
    cases = {"on trial": ({"image": m["id"], "trial": True}, [], "is on trial: not polling"),
             "inhibited": ({}, [str(tmp_path / "inhibit")], r"inhibited by .*inhibit \(recording\)")}
    (tmp_path / "inhibit").write_text("recording\n")
    for name, (booted, inhibit, message) in cases.items():
        before = snapshot(root)
        with pytest.raises(NotNow, match=message):
            poll(make_device(root, release, booted), url, inhibit=tuple(inhibit))
        assert snapshot(root) == before, name
    Banks(str(root)).mark_good(m["id"])  # the trial committed: current now, 1.0.0 previous
    # an image built with --confirm-boots whose boot-ok has not come yet
    manifest = Path(dev.banks.layout.manifest_path(m["id"]))
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "confirm_boots": True}))
    Banks(str(root)).record_boot(m["id"])
    with pytest.raises(NotNow, match="has not confirmed this boot"):
        poll(make_device(root, release), url)
    Banks(str(root)).boot_ok(m["id"])
    assert Banks(str(root)).rollback() == current  # a switch that finishes at the next boot
    with pytest.raises(NotNow, match="finishes at the next boot"):
        poll(make_device(root, release), url)
    assert channel.fleet_log() == []  # not one request


def test_a_poll_while_another_bankctl_works_does_nothing(channel: Server, release: Release, tmp_path: Path) -> None:
    url = published(channel, release, "1.1.0")
    root = tmp_path / "dev"
    make_device(root, release)
    holder = subprocess.Popen([sys.executable, "-c", "import time; from overlay_layout.lock import lock_banks\n"
                               f"with lock_banks({str(root)!r}):\n print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = snapshot(root)
        with pytest.raises(LockError):
            poll(make_device(root, release), url)
        assert snapshot(root) == before and channel.fleet_log() == []
    finally:
        holder.kill()
        holder.wait()


def test_an_image_that_failed_here_is_not_tried_again_and_the_headers_say_why(channel: Server, release: Release,
                                                                              tmp_path: Path) -> None:
    url = published(channel, release, "1.1.0")
    root = tmp_path / "dev"
    assert poll(make_device(root, release), url).action == "staged"
    image, current = release.ids["1.1.0"], Banks(str(root)).layout.pointer("current")
    # the trial's boot: its self-test failed, the init marked it bad and booted current (bootflow.py's record)
    reason = "self-test 20-hardware failed (exit 3): this hardware variant is not supported"
    Banks(str(root)).trial_failed(image, reason)
    bootlog.append_record(str(root), {"time": 1, "image": current, "why": "current", "trial": False,
                                      "fallback_from": {"image": image, "reason": reason}})
    booted = {"image": current, "trial": False, "tried": [{"image": image, "why": "trial", "error": reason}]}
    before = len(channel.fleet_log())
    got = poll(make_device(root, release, booted), url)
    assert got.action == "nothing" and f"not staging {image} (1.1.0) again: it failed on this device" in got.summary
    log = channel.fleet_log()[before:]
    assert [(r["uri"], r["state"]) for r in log] == [("/stable.json", "fell-back")], log
    assert log[0]["fallback"] == f"{image} 1.1.0: {reason}" and log[0]["version"] == "1.0.0"
    Banks(str(root)).gc(current)  # the bad image and its state are gone; poll.json remembers
    bootlog.append_record(str(root), {"time": 2, "image": current, "why": "current", "trial": False})
    got = poll(make_device(root, release, {"image": current}), url)
    assert got.action == "nothing" and "it failed on this device" in got.summary and got.requests == 1
    assert channel.fleet_log()[-1]["state"] == "fell-back"  # still refusing the offered release, and why
    published(channel, release, "1.2.0")
    assert poll(make_device(root, release, {"image": current}), url).action == "staged"


def test_download_only_then_apply_without_the_network(channel: Server, release: Release, tmp_path: Path) -> None:
    url = published(channel, release, "1.1.0")
    root = tmp_path / "dev"
    got = poll(make_device(root, release), url, download_only=True)
    image = release.ids["1.1.0"]
    banks = Banks(str(root))
    assert got.action == "downloaded" and banks.layout.pointer("next") is None and image not in banks.layout.images()
    assert find(banks)["image"] == image
    again = poll(make_device(root, release), url, download_only=True)
    assert again.action == "downloaded" and again.requests == 1  # the document only
    channel.stop()
    m = apply(Banks(str(root)), release.policy, "9.9.9", machine="aarch64")
    banks = Banks(str(root))
    assert m["id"] == image and banks.layout.pointer("next") == image and find(banks) is None
    assert sorted(Path(banks.layout.image_dir(image)).iterdir()) == sorted(
        Path(banks.layout.image_dir(image)) / n for n in ("backups", "manifest.json", "rootfs.chunks",
                                                         "rootfs.squashfs", "upper", "utils", "work"))
    with pytest.raises(Exception, match="no complete download to apply"):
        apply(Banks(str(root)), release.policy, "9.9.9", machine="aarch64")


def test_an_older_document_served_again_is_refused(channel: Server, release: Release, tmp_path: Path) -> None:
    import time

    from overlay_layout.net.channel import make_document
    from overlay_layout.utctime import format_utc
    from tests.fleet import bank_fields

    url = published(channel, release, "1.0.0")
    root = tmp_path / "dev"
    assert poll(make_device(root, release), url).action == "nothing"
    old = {**bank_fields(release.banks["1.1.0"], release.ids["1.1.0"]), "published": format_utc(time.time() - 3600)}
    (channel.root / "banks" / f"{release.ids['1.1.0']}.bank").write_bytes(release.banks["1.1.0"].read_bytes())
    (channel.root / "stable.json").write_bytes(make_document(old, release.seed))  # signed, valid, but older
    os.utime(channel.root / "stable.json", (time.time() + 5, time.time() + 5))  # another ETag (publish does this)
    before = snapshot(root)
    with pytest.raises(Exception, match="before the one this device took from the same URL"):
        poll(make_device(root, release), url)
    assert snapshot(root) == before


def test_a_device_without_a_clock_keeps_an_expired_document_expired(channel: Server, release: Release,
                                                                   tmp_path: Path) -> None:
    url = published(channel, release, "1.0.0")
    root = tmp_path / "dev"
    assert poll(make_device(root, release), url).action == "nothing"
    st = pollstate.load(str(root))
    st["clock"] = st["published"] + 40 * 86400  # it once saw a document published after this one expired
    pollstate.save(str(root), st)
    before = snapshot(root)
    with pytest.raises(Exception, match="expired at"):
        poll(make_device(root, release), url)  # a 304: the kept document, checked again
    assert snapshot(root) == before and channel.fleet_log()[-1]["status"] == 304
