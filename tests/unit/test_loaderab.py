"""The loader A/B on a boot FAT (initfs/loaderab.py) against a model of what each firmware does with it
(boot.cmd's choice for U-Boot, systemd-boot's entry order and boot counting for UEFI): after a power cut at
every write of install-loader and of the blessing, the loader the firmware boots is complete (its CRC files
match), and until the blessing it is the committed one. The firmware itself is run by tests/vm/test_firmware.py."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from initfs import loaderab
from overlay_layout import durable

pytestmark = pytest.mark.unit


class Cut(Exception):
    pass


def _fat(tmp: Path, kind: str) -> Path:
    root = tmp / "boot"
    (root / "a").mkdir(parents=True)
    (root / "loader").mkdir()
    for name, data in (("vmlinuz", b"kernel A" * 100), ("initrd.img", b"initrd A" * 100)):
        (root / "a" / name).write_bytes(data)
        crc = zlib.crc32(data)
        (root / "a" / f"{name}.crc32").write_bytes(crc.to_bytes(4, "big") + crc.to_bytes(4, "little"))
    (root / "a" / "cmdline.env").write_text("bb_args=console=ttyAMA0 root=PARTUUID=1-02\n")
    (root / "loader" / "good.env").write_text("bb_good=a\n")
    if kind == "uboot":
        (root / "boot.scr").write_bytes(b"script")
    else:
        (root / "loader" / "entries").mkdir()
        (root / "loader" / "entries" / "bankboot-1-a.conf").write_text(
            "title a\nlinux /a/vmlinuz\ninitrd /a/initrd.img\noptions console=ttyAMA0 root=PARTUUID=1-02 "
            "bankboot.loader_slot=a\n")
    return root


def _verifies(root: Path, slot: str) -> bool:
    for name in ("vmlinuz", "initrd.img"):
        f, c = root / slot / name, root / slot / f"{name}.crc32"
        if not (f.is_file() and c.is_file()):
            return False
        crc = zlib.crc32(f.read_bytes())
        if c.read_bytes()[:4] not in (crc.to_bytes(4, "big"), crc.to_bytes(4, "little")):
            return False
    return True


def uboot_boot(root: Path, works: set[str]) -> str:
    """What boot.cmd does for one power-on: the slot whose kernel ends up running (try.env decremented as
    U-Boot does). `works`: slots whose kernel reaches the init; the others panic (the caller resets)."""
    good = loaderab.good_slot(str(root))
    t = loaderab.read_env(str(root / "loader" / "try.env"))
    slot = good
    if t.get("bb_try") in ("a", "b") and t["bb_try"] != good and int(t.get("bb_left", "0") or 0) > 0:
        left = int(t["bb_left"]) - 1
        (root / "loader" / "try.env").write_bytes(f"bb_left={left}\nbb_try={t['bb_try']}\n\0".encode())
        slot = t["bb_try"]
    for s in (slot, good, "a"):
        if _verifies(root, s):
            return s
    return "none"


def uefi_boot(root: Path) -> str:
    """systemd-boot 252: counted entries with tries left sort with the rest, those at 0 last; the first one
    boots, and a counted one is renamed before it boots."""
    es = loaderab.entries(str(root))
    order = sorted(es, key=lambda e: (e[2] == 0, -e[0]))
    n, slot, left, done, name = order[0]
    if left:
        new = loaderab.entry_name(n, slot).replace(".conf", f"+{left - 1}-{(done or 0) + 1}.conf")
        os.rename(root / "loader" / "entries" / name, root / "loader" / "entries" / new)
    return slot if _verifies(root, slot) else "none"


def _copy(src: str, dest: str) -> None:
    with open(src, "rb") as f, open(dest, "wb") as out:
        out.write(f.read())


def _install(root: Path, tmp: Path, tries: int = 2) -> list[str]:
    new = tmp / "new"
    new.mkdir(exist_ok=True)
    (new / "k").write_bytes(b"kernel B" * 120)
    (new / "i").write_bytes(b"initrd B" * 120)
    cmdline = loaderab.slot_cmdline(str(root), "a")
    return loaderab.install_slot(str(root), "b", _copy, [(str(new / "k"), "vmlinuz"), (str(new / "i"), "initrd.img")],
                                 cmdline, tries)


def _writes(fn) -> int:
    seen = []
    durable.before_write = seen.append
    try:
        fn()
    finally:
        durable.before_write = None
    return len(seen)


@pytest.mark.parametrize("kind", ["uboot", "uefi"])
def test_install_then_bless_makes_the_new_loader_the_default(tmp_path: Path, kind: str) -> None:
    root = _fat(tmp_path, kind)
    assert loaderab.status(str(root))["good"] == "a" and "trial" not in loaderab.status(str(root))
    lines = _install(root, tmp_path)
    assert any("on trial, 2 tries" in line for line in lines)
    st = loaderab.status(str(root))
    assert st["good"] == "a" and st["trial"]["slot"] == "b" and st["trial"]["tries_left"] == 2
    assert loaderab.slot_cmdline(str(root), "b") == "console=ttyAMA0 root=PARTUUID=1-02"
    booted = uboot_boot(root, {"a", "b"}) if kind == "uboot" else uefi_boot(root)
    assert booted == "b"
    assert loaderab.bless(str(root), "b") is not None
    st = loaderab.status(str(root))
    assert st["good"] == "b" and "trial" not in st
    for _ in range(2):
        assert (uboot_boot(root, {"a", "b"}) if kind == "uboot" else uefi_boot(root)) == "b"
    assert loaderab.bless(str(root), "b") is None  # nothing left to do: the init does not write again
    with pytest.raises(loaderab.LoaderABError, match="committed one"):
        loaderab.install_slot(str(root), "b", _copy, [], "x", 3)


@pytest.mark.parametrize("kind", ["uboot", "uefi"])
def test_a_loader_that_never_boots_an_image_falls_back_after_its_tries(tmp_path: Path, kind: str) -> None:
    root = _fat(tmp_path, kind)
    _install(root, tmp_path, tries=2)
    booted = [uboot_boot(root, {"a"}) if kind == "uboot" else uefi_boot(root) for _ in range(4)]
    assert booted == ["b", "b", "a", "a"]  # b's two tries (never blessed: its kernel panics), then a for good
    assert loaderab.status(str(root))["trial"]["tries_left"] == 0
    # the next install-loader replaces the failed one (its entry or try.env goes first)
    _install(root, tmp_path, tries=1)
    assert loaderab.status(str(root))["trial"] == ({"slot": "b", "tries_left": 1} if kind == "uboot" else
                                                   {"slot": "b", "tries_left": 1, "tries_done": 0})


@pytest.mark.parametrize("kind", ["uboot", "uefi"])
def test_a_power_cut_at_any_write_leaves_a_loader_that_boots(tmp_path: Path, kind: str) -> None:
    """Cut before each durable write of install-loader, then of the blessing: the firmware boots a complete
    loader; before the arm it is always a, the committed one."""
    probe = _fat(tmp_path / "probe", kind)
    n_install = _writes(lambda: _install(probe, tmp_path / "probe"))
    n_bless = _writes(lambda: loaderab.bless(str(probe), "b"))
    assert n_install >= 6 and n_bless == 2
    for phase, count in (("install", n_install), ("bless", n_bless)):
        for cut_at in range(count):
            case = tmp_path / f"{phase}-{cut_at}"
            root = _fat(case, kind)
            if phase == "bless":
                _install(root, case)
            calls = []

            def cut(what: str, calls: list[str] = calls, at: int = cut_at) -> None:
                calls.append(what)
                if len(calls) > at:
                    raise Cut(what)

            durable.before_write = cut
            try:
                with pytest.raises(Cut):
                    _install(root, case) if phase == "install" else loaderab.bless(str(root), "b")
            finally:
                durable.before_write = None
            booted = uboot_boot(root, {"a", "b"}) if kind == "uboot" else uefi_boot(root)
            assert booted in ("a", "b"), (phase, cut_at, calls)
            if phase == "install":
                assert booted == "a", (cut_at, calls)  # nothing was armed: the committed loader
            assert booted == "b" or _verifies(root, "a")
