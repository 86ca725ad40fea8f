"""The DDI protocol's parsing (overlay_layout/net/ddi.py) and the .swu's head (overlay_layout/net/swu.py): the
shapes a rollout server may answer with, each refused with the fault named."""

from __future__ import annotations

import json

import pytest

from overlay_layout.net.ddi import DdiError, controller_url, feedback, parse_deployment, parse_sleep
from overlay_layout.net.swu import SwuError, parse_head

pytestmark = pytest.mark.unit


def deployment(**over: object) -> dict:
    art = {"filename": "a.swu", "size": 100, "hashes": {"sha1": "ab"},
           "_links": {"download": {"href": "http://h/DEFAULT/controller/v1/d/download"}}}
    chunk = {"part": "os", "version": "1.1.0", "name": "a.swu", "artifacts": [art]}
    doc = {"id": "7", "deployment": {"download": "forced", "update": "forced", "chunks": [chunk]}}
    doc["deployment"].update(over)
    return doc


def test_a_deployment_is_read_and_what_bankctl_cannot_take_is_named() -> None:
    d = parse_deployment(deployment(), "w")
    assert (d.action, d.version, d.artifact.size, d.artifact.url) == ("7", "1.1.0", 100,
                                                                      "http://h/DEFAULT/controller/v1/d/download")
    two = deployment()
    two["deployment"]["chunks"] *= 2
    with pytest.raises(DdiError, match="has 2 chunks; bankctl takes exactly one"):
        parse_deployment(two, "w")
    with pytest.raises(DdiError, match="no deployment in the answer"):
        parse_deployment(None, "w")  # goosebit's `null` when the offer was withdrawn
    with pytest.raises(DdiError, match="download/update must be forced, attempt or skip"):
        parse_deployment(deployment(update="later"), "w")
    bare = deployment()
    del bare["deployment"]["chunks"][0]["artifacts"][0]["_links"]
    with pytest.raises(DdiError, match="lacks a download link"):
        parse_deployment(bare, "w")


@pytest.mark.parametrize("text,seconds", [("00:00:05", 5), ("00:01:00", 60), ("8760:00:00", 8760 * 3600)])
def test_polling_sleeps(text: str, seconds: int) -> None:
    assert parse_sleep(text, "w") == seconds


@pytest.mark.parametrize("text", ["5", "00:60:00", "1:2:3", None, "aa:bb:cc"])
def test_bad_polling_sleeps(text: object) -> None:
    with pytest.raises(DdiError, match="is not HH:MM:SS"):
        parse_sleep(text, "w")


def test_names_and_feedback() -> None:
    assert controller_url("https://gb.example.com/", "DEFAULT", "dev-1") == \
        "https://gb.example.com/DEFAULT/controller/v1/dev-1"
    with pytest.raises(DdiError, match="--controller-id 'a/b' is not a name"):
        controller_url("http://h", "DEFAULT", "a/b")
    body = feedback("7", "proceeding", "none", ["x"], (0, 2))
    result = {"finished": "none", "progress": {"cnt": 0, "of": 2}}
    assert body["status"] == {"execution": "proceeding", "result": result, "details": ["x"]}
    assert len(body["time"]) == 15


def entry(name: str, data: bytes, ino: int = 1) -> bytes:
    n = name.encode() + b"\0"
    fields = (ino, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(n), 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + n
    return head + b"\0" * (-len(head) % 4) + data + b"\0" * (-len(data) % 4)


def test_the_head_of_an_artifact() -> None:
    info = {"kind": "bankboot-swu", "format": 1, "image": "1.1.0-ab", "version": "1.1.0", "arch": "arm64",
            "boards": ["qemu-aarch64"], "size": 5, "manifest": "0" * 64}
    good = entry("sw-description", b"software = {};") + entry("bankboot.json", json.dumps(info).encode()) + \
        entry("1.1.0-ab.bank", b"12345")
    got, bank = parse_head(good, "w")
    assert got["image"] == "1.1.0-ab" and good[bank.offset:bank.offset + bank.size] == b"12345"
    bad = {
        "a RAUC bundle": (b"hsqs" + bytes(200), "a RAUC bundle"),
        "HTML": (b"<!DOCTYPE html><html>", "an HTML page"),
        "odc cpio": (b"070707" + bytes(200), "not an SWUpdate .swu"),
        "no sw-description first": (entry("x", b"") + good, "its first member is 'x'"),
        "another program's": (entry("sw-description", b"") + entry("rootfs.ext4", b"x"), "not one bankboot made"),
        "the wrong bank": (good.replace(b"1.1.0-ab.bank", b"1.1.0-ac.bank"), "not the bank it names"),
        "cut short": (good[:120], "ends inside a cpio header|names no readable file"),
    }
    for name, (raw, message) in bad.items():
        with pytest.raises(SwuError, match=message):
            parse_head(raw, "w")
        assert name
