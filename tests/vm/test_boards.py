"""One smoke scenario per board besides qemu-aarch64 (which has the full suites): boot into the sample
image, stage an update, commit it, then ESC at the console boots the previous image (not on raspberrypi2,
whose UART is qemu-armv7's). The update reaches
the device on its userdata partition. Each disk is made for the board's own firmware (`boot.firmware`:
qemu-armv7 through U-Boot, qemu-x86_64 through OVMF and systemd-boot, the Pis direct), so the same boots show
that firmware starting the loader; the loader A/B itself is tests/vm/test_firmware.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.board import load_board
from builder.disk import build_disk
from builder.image import build_image
from builder.initramfs import build_initramfs
from builder.lab.boot import disk_vm
from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
from tests.fixtures import board_parts
from tests.vm.devices import up

pytestmark = pytest.mark.vm
T = 180
BOARDS = ["qemu-x86_64", "raspberrypi3", "qemu-armv7", "raspberrypi2"]


@pytest.mark.parametrize("name", BOARDS)
def test_board_boots_stages_commits_and_falls_back_with_esc(name: str, test_dir: Path, signing_key, trust_policy):
    board_parts(name)  # fails loudly when the board's parts are missing
    board = load_board(name)
    out = test_dir / f"board-{name}"
    out.mkdir(exist_ok=True)
    initrd = build_initramfs(board, out / "initramfs.img", policy=trust_policy).path
    for version in ("1.0.0", "1.1.0"):
        rootfs = build_sample_rootfs(board.arch, out / f"rootfs-{version}", version=version)
        build_image(rootfs, version, out / f"app-{version}.bank", sign_key=signing_key.private,
                    persist=SAMPLE_PERSIST)
    disk = out / "disk.img"
    build_disk(board, out / "app-1.0.0.bank", disk, 256 << 20, initrd, userdata_files=[out / "app-1.1.0.bank"],
               firmware=board.firmware)
    with disk_vm(board, disk, out, reboot=True) as vm:
        assert up(vm, T) == "1.0.0"
        if board.firmware != "direct":  # the firmware started loader slot a from the disk, not QEMU's -kernel
            assert re.search({"uboot": r"U-Boot 20\d\d\.\d\d", "uefi": r"EFI stub: "}[board.firmware],
                             vm.console.text()), vm.console.text()[:2000]
            rc, out_ = vm.console.run("bankctl loader --json", timeout=T)
            assert rc == 0, out_
            st = json.loads(out_[out_.index("{"):])  # after any FAT-fs warning the kernel prints while it mounts
            assert st["firmware"] == board.firmware and st["booted"] == {"slot": "a", "trial": False}, st
            rc, cmdline = vm.console.run("cat /proc/cmdline", timeout=T)
            assert "bankboot.loader_slot=a" in cmdline, cmdline
        rc, _ = vm.console.run("test -d /sys/firmware/efi", timeout=T)  # a kernel started by UEFI
        assert (rc == 0) == (board.firmware == "uefi")
        rc, msg = vm.console.run("bankctl stage /userdata/app-1.1.0.bank", timeout=T)
        assert rc == 0, msg
        vm.console.sendline("reboot")
        assert up(vm, T) == "1.1.0"
        assert "trial boot; marked good" in vm.console.text()
        rc, st = vm.console.run("bankctl status --json", timeout=T)
        assert json.loads(st)["pointers"]["previous"].startswith("1.0.0-")
        if name == "raspberrypi2":  # its console is the PL011 qemu-armv7 presses ESC on: a boot saved
            return
        vm.console.sendline("reboot")
        vm.console.expect(r"Press ESC for the boot menu", T)
        vm.console.send(b"\x1b")
        vm.console.expect(r"choice: ", 30)
        vm.console.send(b"\x1b")
        assert up(vm, T) == "1.0.0"
