"""One smoke scenario per board besides qemu-aarch64 (which has the full suites): boot into the sample
image, stage an update, commit it, then ESC at the console boots the previous image. The update reaches
the device on its userdata partition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.board import load_board
from builder.boot import disk_vm
from builder.disk import build_disk
from builder.image import build_image
from builder.initramfs import build_initramfs
from builder.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
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
    build_disk(board, out / "app-1.0.0.bank", disk, 256 << 20, initrd, userdata_files=[out / "app-1.1.0.bank"])
    with disk_vm(board, disk, out, reboot=True) as vm:
        assert up(vm, T) == "1.0.0"
        rc, msg = vm.console.run("bankctl stage /userdata/app-1.1.0.bank", timeout=T)
        assert rc == 0, msg
        vm.console.sendline("reboot")
        assert up(vm, T) == "1.1.0"
        assert "trial boot; marked good" in vm.console.text()
        rc, st = vm.console.run("bankctl status --json", timeout=T)
        assert json.loads(st)["pointers"]["previous"].startswith("1.0.0-")
        vm.console.sendline("reboot")
        vm.console.expect(r"Press ESC for the boot menu", T)
        vm.console.send(b"\x1b")
        vm.console.expect(r"choice: ", 30)
        vm.console.send(b"\x1b")
        assert up(vm, T) == "1.0.0"
