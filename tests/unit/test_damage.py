"""State files of any content, cut stages and resets, and concurrent bankctl runs: never a crash, never
a lower floor, never a refused retry."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from overlay_layout import bootlog
from overlay_layout.lock import LockError, lock_banks
from overlay_layout.stage import StageError, stage
from overlay_layout.state import GOOD, Banks, StateError
from tests.banks import DEV, boot, install_first_image, make_bank

DAMAGE = {
    "garbage": b"\x00\xffnot json at all",
    "empty": b"",
    "list": b"[1, 2, 3]",
    "wrong shape": json.dumps({"format": 1, "images": {"x": 5}, "reset": []}).encode(),
    "wrong types": json.dumps({"format": 1, "images": {"x": {"state": "good", "tries": "three"}}}).encode(),
    "deeply nested": b"[" * 100000 + b"]" * 100000,
    "huge": b'{"format": 1, "images": {}, "pad": "' + b"x" * (2 << 20) + b'"}',
}


def _manifest(root: Path, image: str, version: str) -> None:
    (root / "overlay" / image / "manifest.json").write_text(json.dumps({"version": version}))


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_state_file_is_kept_aside_and_rebuilt_never_lowering_the_floor(tmp_path: Path, kind: str) -> None:
    install_first_image(tmp_path, "1.0.0-a")
    install_first_image(tmp_path, "2.0.0-b")  # current now; 1.0.0-a is made previous below
    banks = Banks(str(tmp_path))
    banks.layout.set_pointer("previous", "1.0.0-a")
    _manifest(tmp_path, "1.0.0-a", "1.0.0")
    _manifest(tmp_path, "2.0.0-b", "2.0.0")
    (tmp_path / "state.json").write_bytes(DAMAGE[kind])
    st = banks.load()
    assert st["floor"] == "2.0.0" and st["images"]["2.0.0-b"]["state"] == GOOD
    assert "damaged" in banks.warnings[0] and (tmp_path / "state.json.damaged").exists()
    plan = banks.begin_boot()
    assert [c.image for c in plan.candidates] == ["2.0.0-b", "1.0.0-a"]
    again = Banks(str(tmp_path))  # the boot wrote the repaired state back
    assert again.load()["floor"] == "2.0.0" and not again.warnings


@pytest.mark.parametrize("content", [b"garbage", b"{}", b"[1, \"x\", [2], {\"image\": {\"deep\": {}}}]",
                                     b"[" * 50000 + b"]" * 50000])
def test_a_damaged_boot_log_is_read_without_crashing(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "boot-log.json").write_bytes(content)
    warnings: list[str] = []
    records = bootlog.read_log(str(tmp_path), warnings)
    assert all(isinstance(r, dict) for r in records)
    bootlog.append_record(str(tmp_path), {"image": "x"}, warnings)
    assert bootlog.read_log(str(tmp_path))[-1]["image"] == "x"


def test_reset_cut_and_redone_in_the_same_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Boards without a clock boot at the same second: a cut reset redone must not hit ENOTEMPTY."""
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    upper = Path(banks.layout.sub("1.0.0-base", "upper"))
    monkeypatch.setattr(time, "gmtime", lambda *a: time.struct_time((2000, 1, 1, 0, 0, 0, 5, 1, 0)))
    for round_ in range(3):
        (upper / f"file{round_}").write_text("change")
        banks.request_reset("1.0.0-base", keep_backup=True)
        os.makedirs(Path(banks.layout.sub("1.0.0-base", "backups")) / "upper-20000101T000000" / "x", exist_ok=True)
        assert banks.apply_reset("1.0.0-base").startswith("reset")
        assert os.listdir(upper) == []


def test_a_stage_cut_midway_leaves_nothing_that_blocks_a_retry(tmp_path: Path) -> None:
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    image = make_bank(tmp_path / "u.bank", "2.0.0", b"q" * 5000)
    # What a cut leaves: a staging directory, and a complete image never made next.
    os.makedirs(tmp_path / "overlay" / f".staging-{image}" / "upper")
    (tmp_path / "overlay" / f".staging-{image}" / "rootfs.squashfs").write_bytes(b"hsqs" + b"\0" * 100)
    (tmp_path / ".state.json.tmp-4242").write_text("{half")  # a state write cut before its rename
    os.symlink("x", tmp_path / "overlay" / ".next.tmp-4243")
    stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64", reserve=0)
    assert banks.layout.pointer("next") == image
    assert not [n for n in os.listdir(tmp_path / "overlay") if n.startswith(".")]
    assert not (tmp_path / ".state.json.tmp-4242").exists()
    # Cut after the rename, before `next` was written: the unpointed copy is replaced by a retry.
    banks.layout.set_pointer("next", None)
    stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64", reserve=0)
    assert banks.layout.pointer("next") == image
    with pytest.raises(StageError, match="already on the banks partition \\(next\\)"):
        stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64", reserve=0)


def test_stage_after_rollback_is_refused(tmp_path: Path) -> None:
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    image = make_bank(tmp_path / "u.bank", "2.0.0", b"r" * 5000)
    stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64", reserve=0)
    boot(banks)
    banks.mark_good(image)
    banks.rollback()
    make_bank(tmp_path / "v.bank", "3.0.0", b"s" * 5000)
    with pytest.raises(StateError, match="pending .* reboot first"):
        stage(banks, str(tmp_path / "v.bank"), DEV, "9.9.9", machine="x86_64", reserve=0)


def test_stage_keeps_a_reserve_for_the_next_boot(tmp_path: Path) -> None:
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    make_bank(tmp_path / "u.bank", "2.0.0", b"t" * 5000)
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(StageError, match="kept free for the next boot"):
        stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64", reserve=free)


def test_two_bankctl_commands_cannot_interleave(tmp_path: Path) -> None:
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from overlay_layout.lock import lock_banks\n"
                               f"with lock_banks({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match="another bankctl"), lock_banks(str(tmp_path), wait=0.3):
            pass
    finally:
        holder.kill()
        holder.wait()
    with lock_banks(str(tmp_path), wait=0.3):  # a killed holder's lock is gone with it
        pass


@pytest.mark.parametrize(("record", "waits"), [
    ({"image": "a", "trial": False, "why": "current"}, False),
    ({"image": "a", "trial": True}, True),
    ({"image": "a", "trial": False, "tried": [{"image": "b", "error": "bad"}]}, True),
    ({"image": "a", "trial": False, "fallback_from": {"image": "b", "reason": "bad"}}, True),
    ({"image": "a", "trial": False, "notes": "removed a kit"}, True),
    ({"image": "a", "trial": False, "unconfirmed_boots": 1}, True),
])
def test_only_a_plain_boots_record_is_not_waited_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      record: dict, waits: bool) -> None:
    """The init does not wait for the disk for a boot that changed nothing; every other record is fsynced
    (file and directory) before the hand-over, and both kinds replace the log whole (temp file renamed)."""
    bootlog.append_record(str(tmp_path), {"image": "old"})
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    bootlog.append_record(str(tmp_path), dict(record), None, not bootlog.is_plain(record))
    assert (len(synced) == 2) is waits and (not synced) is (not waits)
    assert [r["image"] for r in bootlog.read_log(str(tmp_path))] == ["old", "a"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
