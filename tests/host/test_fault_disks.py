"""What the fault campaign does to a device offline before it boots it through its firmware (builder/lab/faults.py):
the ESC window written into the command line the firmware reads from the FAT, and a device copied together with
its firmware's storage. Booting them is `make faults BOARD=...` and tests/vm/test_faults.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.disk import boot_fat, build_disk, mtools_env
from builder.image import build_image
from builder.lab.faults import NOISE_WINDOW, set_options
from builder.lab.rig import NO_PROMPT, copy_device
from builder.lab.samplerootfs import build_sample_rootfs

pytestmark = pytest.mark.host


def _read(disk: Path, name: str) -> str:
    return subprocess.run(["mtype", "-i", boot_fat(disk), f"::{name}"], env=mtools_env(), check=True,
                          capture_output=True, text=True).stdout


@pytest.mark.parametrize("firmware", ["uboot", "uefi"])
def test_the_noise_window_replaces_the_campaigns_options_on_the_fat(firmware: str, aarch64, built_initramfs,
                                                                    signing_key, tmp_path: Path) -> None:
    rootfs = build_sample_rootfs(aarch64.board.arch, tmp_path / "rootfs", version="1.0.0")
    build_image(rootfs, "1.0.0", tmp_path / "app.bank", sign_key=signing_key.private)
    disk = tmp_path / "disk.img"
    build_disk(aarch64.board, tmp_path / "app.bank", disk, 512 << 20, built_initramfs(aarch64.board),
               boot_size=None, firmware=firmware, extra_cmdline=NO_PROMPT)
    name = "a/cmdline.env" if firmware == "uboot" else "loader/entries/bankboot-1-a.conf"
    before = _read(disk, name)
    assert NO_PROMPT in before
    set_options(disk, firmware, NOISE_WINDOW)
    after = _read(disk, name)
    def cmdline(text: str) -> str:
        return next(x for x in text.splitlines() if x.startswith(("bb_args=", "options ")))

    line = cmdline(after)
    assert NO_PROMPT not in line and line.endswith(NOISE_WINDOW)
    assert line.split()[:3] == cmdline(before).split()[:3]
    copy = tmp_path / "copy.img"
    copy_device(disk, copy)
    state = ".uboot-env" if firmware == "uboot" else ".efivars"
    assert not copy.with_name(copy.name + state).exists()  # none made yet: none copied (the next boot makes it)
    disk.with_name(disk.name + state).write_bytes(b"flash")
    copy_device(disk, copy)
    assert copy.with_name(copy.name + state).read_bytes() == b"flash" and _read(copy, name) == after
