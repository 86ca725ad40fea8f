"""The channel document (overlay_layout/net/channel.py) and what surrounds it on the device: every way a
document is refused names the document and why; UTC times and durations; the device id systemd's way;
the poll state read whatever the file holds."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initfs import identity
from overlay_layout import ed25519, pollstate
from overlay_layout.net.channel import MAX_BYTES, ChannelError, check_for, make_document, parse_document
from overlay_layout.trust import key_id, sign_manifest
from overlay_layout.utctime import format_duration, format_utc, parse_duration, parse_utc

SEED = bytes(range(32))
OTHER = bytes(range(1, 33))
PUB = ed25519.keypair(SEED)[0]
KEYS = {key_id(PUB): PUB}
NOW = 1_800_000_000
WHERE = "http://h/stable.json"


def fields(**over: object) -> dict:
    base = {"channel": "stable", "version": "1.1.0", "image": "1.1.0-abcd", "arch": "arm64",
            "boards": ["qemu-aarch64"], "bank": "banks/1.1.0-abcd.bank", "size": 1000, "manifest": "a" * 64,
            "published": format_utc(NOW), "expires": format_utc(NOW + 86400)}
    return {**base, **over}


def doc(seed: bytes = SEED, **over: object) -> bytes:
    return make_document(fields(**over), seed)


def parse(raw: bytes, allow_unsigned: bool = False):
    return parse_document(raw, WHERE, KEYS, allow_unsigned)


def test_a_good_document_is_taken() -> None:
    ch = parse(doc(min_version="1.0.0"))
    assert (ch.version, ch.image, ch.boards, ch.min_version) == ("1.1.0", "1.1.0-abcd", ["qemu-aarch64"], "1.0.0")
    assert ch.signed_by == f"key {key_id(PUB)}" and ch.expires - ch.published == 86400
    check_for(ch, WHERE, "qemu-aarch64", NOW + 10)


def unsigned() -> bytes:
    d = json.loads(doc())
    del d["signatures"]
    return json.dumps(d).encode()


def tampered() -> bytes:
    d = json.loads(doc())
    d["version"] = "9.9.9"
    return json.dumps(d).encode()


@pytest.mark.parametrize("raw, message", [
    (unsigned, "the channel document http://h/stable.json is not signed and this device accepts only signed"),
    (lambda: doc(OTHER), "the channel document http://h/stable.json is signed by key [0-9a-f]{16}, which this "
                         "device does not trust"),
    (tampered, "the channel document http://h/stable.json: the signature by key .* does not match"),
    (lambda: b"{not json", "http://h/stable.json is not a channel document: not JSON"),
    (lambda: b"<!DOCTYPE html><html><title>Login</title></html>", "is an HTML page, not a channel document"),
    (lambda: b"\n  <html><body>502 Bad Gateway</body></html>", "is an HTML page"),
    (lambda: b" " * (MAX_BYTES + 1), "is 65537 bytes; a channel document is at most 64 KiB"),
    (lambda: json.dumps({"format": 1, "id": "x"}).encode(), "is not a bankboot channel document"),
    (lambda: json.dumps({"format": 2, "kind": "bankboot-channel"}).encode(), "has format 2; this bankctl reads"),
    (lambda: b"[]", "is not a bankboot channel document"),
])
def test_documents_that_are_refused(raw, message: str) -> None:
    with pytest.raises(ChannelError, match=message):
        parse(raw())


def test_an_unsigned_document_is_taken_only_where_unsigned_images_are() -> None:
    assert parse(unsigned(), allow_unsigned=True).signed_by.startswith("unsigned")


@pytest.mark.parametrize("over, message", [
    ({"version": "1.1"}, "version '1.1' is not a semantic version"),
    ({"image": "current"}, "invalid image id"),
    ({"arch": "mips"}, "unknown architecture 'mips'"),
    ({"boards": []}, "'boards' must list 1 to 64 board names"),
    ({"boards": ["a b"]}, "'boards' must list"),
    ({"bank": "banks/a b.bank"}, "'bank' must be a URL"),
    ({"size": 0}, "'size' must be positive"),
    ({"size": True}, "'size' must be an integer"),
    ({"manifest": "A" * 64}, "'manifest' must be a sha256"),
    ({"expires": "2027-01-01"}, "must be UTC times"),
    ({"expires": format_utc(NOW - 1)}, "expires .* before it was published"),
    ({"channel": "-x"}, "channel '-x' is not a name"),
    ({"extra": 1}, "unknown field\\(s\\) extra"),
])
def test_fields_are_checked_when_publishing_and_when_polling(over: dict, message: str) -> None:
    with pytest.raises(ChannelError, match=message):
        make_document(fields(**over), SEED)
    bad = sign_manifest({"format": 1, "kind": "bankboot-channel", **fields(**over)}, SEED)
    with pytest.raises(ChannelError, match=message):
        parse(json.dumps(bad).encode())


def test_device_checks_board_expiry_and_replay() -> None:
    ch = parse(doc())
    with pytest.raises(ChannelError, match="is for board qemu-aarch64; this device is raspberrypi3"):
        check_for(ch, WHERE, "raspberrypi3", NOW)
    with pytest.raises(ChannelError, match=r"expired at .*the publisher must sign it again"):
        check_for(ch, WHERE, "qemu-aarch64", NOW + 86400)
    with pytest.raises(ChannelError, match="before the one this device took from the same URL"):
        check_for(ch, WHERE, "qemu-aarch64", NOW, seen=NOW + 1)
    check_for(ch, WHERE, "qemu-aarch64", NOW, seen=NOW)  # the same document again


@given(st.integers(min_value=0, max_value=253402300799))
def test_utc_times_round_trip(epoch: int) -> None:
    assert parse_utc(format_utc(epoch)) == epoch


@pytest.mark.parametrize("text", ["2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z",
                                  "2026-01-01 00:00:00Z", "2026-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z", 5])
def test_malformed_utc_times(text: object) -> None:
    assert parse_utc(text) is None


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90s", "30m", "6h", "30d", "2w", "1.5h")] == [90, 1800, 21600, 2592000,
                                                                                     1209600, 5400]
    assert [format_duration(s) for s in (90, 1800, 21600, 2592000, 5.5)] == ["90s", "30m", "6h", "30d", "5.5s"]
    for bad in ("6", "h", "-1h", "nanh", "1y"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)


def test_device_id_is_systemds_app_specific_id(tmp_path) -> None:
    # systemd-id128 machine-id --app-specific=c06d8e841e874ab9bf09b8c168c1a0b9 on a machine whose id is this one
    machine = "3d1219c7c4c5404aaa1f6d2a48adfda4"
    assert identity.app_specific_id(bytes.fromhex(machine), bytes.fromhex("4f1c3e0a9b7d4c2e8a6f5b3d1e0c9a87")) == \
        "e4ca70bbce7d4ae7aade55d167caa8f9"
    (tmp_path / "etc").mkdir()
    assert identity.device_id(str(tmp_path)) is None
    serial = tmp_path / "proc/device-tree"
    serial.mkdir(parents=True)
    (serial / "serial-number").write_bytes(b"00000000abcdef12\0")
    assert identity.device_id(str(tmp_path)) == "serial-00000000abcdef12"
    (tmp_path / "etc/machine-id").write_text(machine + "\n")
    assert identity.device_id(str(tmp_path)) == identity.app_specific_id(bytes.fromhex(machine))


def test_headers_are_one_printable_line_each() -> None:
    got = dict(identity.headers("d", "qemu-aarch64", "1.0.0-x", "1.0.0", "1.1.0-y 1.1.0: self-test\r\nX-Evil: 1"))
    assert got["Bankboot-State"] == "fell-back" and got["Bankboot-Fallback"] == "1.1.0-y 1.1.0: self-test??X-Evil: 1"
    assert dict(identity.headers(None, "b", "i", "v", None)) == {"Bankboot-Board": "b", "Bankboot-Image": "i",
                                                                 "Bankboot-Version": "v", "Bankboot-State": "committed"}


@pytest.mark.parametrize("content", [b"", b"garbage", b"[1, 2]", b'{"format": 1, "failed": 3, "clock": "x"}',
                                     b"{" * 100000, os.urandom(300000)])
def test_poll_state_of_any_content_reads(tmp_path, content: bytes) -> None:
    (tmp_path / pollstate.POLL_FILE).write_bytes(content)
    st = pollstate.load(str(tmp_path))
    assert st["failed"] == {} and pollstate.clock(st) == 0
    pollstate.save(str(tmp_path), {**st, "clock": 5, "failed": {str(i): {} for i in range(40)}})
    again = pollstate.load(str(tmp_path))
    assert again["clock"] == 5 and len(again["failed"]) == pollstate.KEEP_FAILED
