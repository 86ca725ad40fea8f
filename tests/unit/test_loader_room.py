"""`bankctl install-loader` after a power cut cut it short (initfs/loader.py): what the cut left on the boot
partition (a `.new` copy, whole or partial) does not count against the room for the retry. A boot FAT here is
a directory with a capacity: free space is the capacity less what its files hold, as statvfs would say."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from initfs import loader, loaderab
from overlay_layout.contract import SLOT_INITRD, SLOT_KERNEL

pytestmark = pytest.mark.unit

KERNEL, INITRD = b"K" * 30_000, b"I" * 5_000


def _held(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.fixture
def boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "boot"
    root.mkdir()
    capacity = 84_000  # the old pair, the new pair and a copy of the old (the .previous) fit, barely
    monkeypatch.setattr(loader, "BOOT", str(root))
    monkeypatch.setattr(loader, "mount_boot", lambda dev, readonly=False: None)
    monkeypatch.setattr(loader, "umount", lambda path: None)
    real = os.statvfs
    monkeypatch.setattr(loader.os, "statvfs", lambda p: SimpleNamespace(f_bavail=capacity - _held(root), f_frsize=1)
                        if Path(p) == root else real(p))
    return root


def _image(tmp: Path) -> tuple[str, dict]:
    lower = tmp / "lower"
    (lower / "boot").mkdir(parents=True)
    (lower / "boot/vmlinuz").write_bytes(KERNEL)
    (lower / "boot/initrd.img").write_bytes(INITRD)
    kernel = {name: {"path": f"/boot/{f}", "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
              for name, f, d in (("image", "vmlinuz", KERNEL), ("initramfs", "initrd.img", INITRD))}
    return str(lower), {"kernel": kernel}


def test_a_direct_install_cut_short_leaves_room_for_its_retry(boot: Path, tmp_path: Path) -> None:
    (boot / "vmlinuz").write_bytes(b"k" * 20_000)
    (boot / "initramfs.img").write_bytes(b"i" * 4_000)
    # What a cut between the copies and the renames leaves: both new files whole, a .previous copy cut short.
    (boot / "vmlinuz.new").write_bytes(KERNEL)
    (boot / "initramfs.img.new").write_bytes(INITRD)
    (boot / "vmlinuz.previous.new").write_bytes(b"k" * 7_000)
    lower, manifest = _image(tmp_path)
    done = loader.install_loader(lower, manifest, "/dev/vda1", "vmlinuz", 3)
    assert len(done) == 2
    assert (boot / "vmlinuz").read_bytes() == KERNEL and (boot / "initramfs.img").read_bytes() == INITRD
    assert (boot / "vmlinuz.previous").read_bytes() == b"k" * 20_000
    assert sorted(p.name for p in boot.iterdir()) == ["initramfs.img", "initramfs.img.previous", "vmlinuz",
                                                      "vmlinuz.previous"]


def test_a_direct_install_that_does_not_fit_says_so_and_changes_nothing(boot: Path, tmp_path: Path) -> None:
    (boot / "vmlinuz").write_bytes(b"k" * 30_000)
    (boot / "initramfs.img").write_bytes(b"i" * 4_000)
    (boot / "other").write_bytes(b"o" * 20_000)
    lower, manifest = _image(tmp_path)
    with pytest.raises(loader.LoaderError, match=r"has [\d.]+ MB free.*nothing installed.*--boot-size"):
        loader.install_loader(lower, manifest, "/dev/vda1", "vmlinuz", 3)
    assert sorted(p.name for p in boot.iterdir()) == ["initramfs.img", "other", "vmlinuz"]


def test_a_slot_install_cut_short_leaves_room_for_its_retry(boot: Path, tmp_path: Path) -> None:
    for slot in ("a", "b"):
        (boot / slot).mkdir()
        (boot / slot / SLOT_KERNEL).write_bytes(b"k" * 20_000)
        (boot / slot / SLOT_INITRD).write_bytes(b"i" * 4_000)
        (boot / slot / "cmdline.env").write_text("bb_args=console=ttyAMA0\n")
    (boot / "loader").mkdir()
    (boot / "loader/good.env").write_text("bb_good=a\n")
    (boot / "boot.scr").write_bytes(b"script")
    # A cut while slot b's new kernel was written: the old pair of b was already replaced in part.
    (boot / "b" / f".{SLOT_KERNEL}.new").write_bytes(KERNEL[:25_000])
    lower, manifest = _image(tmp_path)
    done = loader.install_loader(lower, manifest, "/dev/vda1", "vmlinuz", 3)
    assert any("loader b on trial" in line for line in done), done
    assert (boot / "b" / SLOT_KERNEL).read_bytes() == KERNEL and (boot / "b" / SLOT_INITRD).read_bytes() == INITRD
    assert not [p for p in (boot / "b").iterdir() if p.name.endswith(".new")]
    assert loaderab.good_slot(str(boot)) == "a"
