"""Booting through real firmware (Debian's U-Boot for qemu_arm64; AAVMF with systemd-boot) and the loader A/B
`bankctl install-loader` arms in it: a new loader boots on trial and the init commits it; one that panics before
/init, whose initramfs is cut short, or that is cut by a power cut while it is written falls back to the
committed loader without anyone's help. This is the loader slice of the never-brick campaign in `make test`;
`make faults` runs every loader class (a hang before the init too) in rounds (builder/lab/loaderfaults.py). What
the guest reports (/proc/cmdline as the firmware built it, /sys/firmware/efi, `bankctl loader`, the mount
table) is the evidence, with the firmware's own console lines."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from builder.board import load_board
from builder.disk import FIRST, build_disk, partitions
from builder.image import build_image
from builder.lab.boot import disk_vm
from builder.lab.rig import PROMPT, fat_read, fat_write
from builder.lab.samplerootfs import SAMPLE_PERSIST, add_kernel_modules, build_sample_rootfs
from qemu.vm import VM
from tests.fixtures import board_parts

pytestmark = pytest.mark.vm
T = 240


def _up(vm: VM) -> dict:
    """The guest is up: what it says about its loader (bankctl loader --json) and its command line."""
    vm.console.expect(r"sample-rootfs: ready", T)
    vm.console.expect(PROMPT, T)
    rc, out = vm.console.run("bankctl loader --json", timeout=T)
    assert rc == 0, out
    st = json.loads(out[out.index("{"):])  # after any FAT-fs warning the kernel prints while it mounts
    rc, st["cmdline"] = vm.console.run("cat /proc/cmdline", timeout=T)
    rc, mounts = vm.console.run("cat /proc/mounts", timeout=T)
    root = [m.split() for m in mounts.splitlines() if len(m.split()) > 2 and m.split()[1] == "/"]
    assert len(root) == 1 and root[0][2] == "overlay", mounts  # the image's root, not the initramfs
    return st


def panicking(cmdline: str) -> str:
    """A command line on which the kernel panics before any /init: no init in the initramfs, no root to mount."""
    words = [w for w in cmdline.split() if not w.startswith("root=") and w != "rootwait"]
    return " ".join([*words, "rdinit=/nonexistent"])


def _make(name: str, firmware: str, test_dir: Path, signing_key, built_initramfs) -> tuple[Path, Path]:
    """A disk of the board for `firmware` whose image 1.0.0 carries the loader's own kernel and initramfs
    (so `bankctl install-loader current` has a pair to install)."""
    base, kernel, _ = board_parts("qemu-aarch64")
    board = load_board(name)
    out = test_dir / f"firmware-{name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    initrd = built_initramfs(base)  # the same kernel and modules on both boards
    rootfs = build_sample_rootfs(board.arch, out / "rootfs", version="1.0.0")
    add_kernel_modules(rootfs, kernel, base.modules)
    build_image(rootfs, "1.0.0", out / "app-1.0.0.bank", sign_key=signing_key.private, persist=SAMPLE_PERSIST,
                kernel=kernel.image, kernel_initramfs=initrd)
    disk = out / "disk.img"
    build_disk(board, out / "app-1.0.0.bank", disk, 512 << 20, initrd, boot_size=None, firmware=firmware)
    return out, disk


def test_uboot_loader_ab_commits_a_good_loader_and_falls_back_from_a_bad_one(test_dir: Path, signing_key,
                                                                           built_initramfs) -> None:
    name = "qemu-aarch64"
    board = load_board(name)
    assert board.firmware == "uboot"
    out, disk = _make(name, "uboot", test_dir, signing_key, built_initramfs)

    with disk_vm(board, disk, out / "boot1", reboot=True) as vm:
        vm.console.expect(r"U-Boot 20\d\d\.\d\d", T)  # the firmware runs, not QEMU's -kernel
        vm.console.expect(r"bankboot: loading loader a", T)
        st = _up(vm)
        assert st["firmware"] == "uboot" and st["good"] == "a" and "trial" not in st
        assert st["booted"] == {"slot": "a", "trial": False} and "bankboot.loader_slot=a" in st["cmdline"]
        # A power cut at a random instant of install-loader: whatever it left, a loader boots.
        vm.console.sendline("bankctl install-loader current --tries 2")
        vm.console.expect(r"loop\d+: detected capacity change", T)
        time.sleep(random.Random(7).uniform(0.2, 4.0))
        vm.power_cut()
    with disk_vm(board, disk, out / "boot2", reboot=True) as vm:
        st = _up(vm)
        assert st["booted"]["slot"] in ("a", "b"), st
        # From the committed loader (whichever it is now), a whole install into the other slot.
        first = st["good"]
        new = "b" if first == "a" else "a"
        rc, msg = vm.console.run("bankctl install-loader current --tries 2", timeout=T)
        assert rc == 0 and f"loader {first} stays the default until loader {new}" in msg, msg
        vm.console.sendline("reboot")
        vm.console.expect(rf"bankboot: trying loader {new}, 1 tries left after this one", T)
        st = _up(vm)
        # the init committed it: the guest booted the new slot on trial, and the FAT now names it
        assert st["booted"] == {"slot": new, "trial": True} and st["good"] == new and "trial" not in st, st
        good = new  # every later boot starts it without a trial (boot3 and boot4 below)
        bad = first
        # Next: a loader whose kernel panics before /init on this board (here: its command line names no
        # init, so the kernel cannot mount a root); written, then the disk edited while powered off.
        rc, msg = vm.console.run("bankctl install-loader current --tries 2", timeout=T)
        assert rc == 0, msg
        vm.console.sendline("poweroff -f")
        vm.wait_exit(T)
    env = fat_read(disk, f"{bad}/cmdline.env").decode().strip()
    fat_write(disk, f"{bad}/cmdline.env", (panicking(env) + "\n").encode(), out)
    with disk_vm(board, disk, out / "boot3", reboot=True) as vm:
        for left in (1, 0):
            vm.console.expect(rf"bankboot: trying loader {bad}, {left} tries left after this one", T)
            vm.console.expect(r"Kernel panic - not syncing", T)
        vm.console.expect(rf"bankboot: loading loader {good}", T)
        st = _up(vm)
        assert st["booted"] == {"slot": good, "trial": False} and st["good"] == good
        assert st["trial"] == {"slot": bad, "tries_left": 0}
        # A loader whose initramfs is cut short (a power cut on a card that reorders writes): its CRC fails and
        # the same boot goes on with the committed one, without spending a reset.
        rc, msg = vm.console.run("bankctl install-loader current --tries 2", timeout=T)
        assert rc == 0, msg
        vm.console.sendline("poweroff -f")
        vm.wait_exit(T)
    initrd = fat_read(disk, f"{bad}/initrd.img")
    fat_write(disk, f"{bad}/initrd.img", initrd[:len(initrd) * 9 // 10], out)
    with disk_vm(board, disk, out / "boot4", reboot=True) as vm:
        vm.console.expect(rf"bankboot: trying loader {bad}, 1 tries left", T)
        vm.console.expect(rf"bankboot: loader {bad}: initrd.img failed to load, verify or start", T)
        vm.console.expect(rf"bankboot: loading loader {good}", T)
        st = _up(vm)
        assert st["booted"] == {"slot": good, "trial": False} and st["good"] == good
        assert "Kernel panic" not in vm.console.text()
        vm.console.sendline("poweroff -f")
        vm.wait_exit(T)
    # A loader that hangs before the init (the watchdog boot.scr arms resets it) is make faults' loader-hang
    # class (builder/lab/loaderfaults.py): ~40 s of boots and a 10 s watchdog, left out of make test.
    # the FAT's directories are intact after all of it (U-Boot's fatwrite and Linux's vfat both wrote it; a
    # power cut may leave lost clusters, which fsck.vfat -n reports but which are only space)
    part = out / "p1.vfat"
    with open(disk, "rb") as d, open(part, "wb") as p:
        d.seek(FIRST)
        p.write(d.read(partitions(disk)[0]["size"] * 512))
    check = subprocess.run(["fsck.vfat", "-n", str(part)], capture_output=True, text=True)
    assert check.returncode in (0, 1) and not re.search(r"(?i)cross-linked|bad directory|duplicate|invalid",
                                                         check.stdout), check.stdout + check.stderr


def test_uefi_systemd_boot_counts_a_new_loader_and_falls_back(test_dir: Path, signing_key,
                                                              built_initramfs) -> None:
    name = "qemu-aarch64-uefi"
    board = load_board(name)
    assert board.firmware == "uefi"
    out, disk = _make(name, "uefi", test_dir, signing_key, built_initramfs)
    with disk_vm(board, disk, out / "boot1", reboot=True) as vm:
        vm.console.expect(r"EFI stub: Booting Linux Kernel", T)  # started by systemd-boot from the ESP
        st = _up(vm)
        assert st["firmware"] == "uefi" and st["good"] == "a" and st["booted"] == {"slot": "a", "trial": False}
        rc, efi = vm.console.run("test -d /sys/firmware/efi", timeout=T)  # the kernel was started by UEFI
        assert rc == 0, efi
        rc, msg = vm.console.run("bankctl install-loader current --tries 1", timeout=T)
        assert rc == 0 and "bankboot-2-b+1.conf" in msg, msg
        vm.console.sendline("reboot")
        st = _up(vm)
        assert st["booted"] == {"slot": "b", "trial": True} and st["good"] == "b", st
        assert st["entries"] == ["bankboot-2-b.conf", "bankboot-1-a.conf"], st  # blessed: no counter left
        # a new loader in a whose kernel panics: one try, then b again
        rc, msg = vm.console.run("bankctl install-loader current --tries 1", timeout=T)
        assert rc == 0 and "bankboot-3-a+1.conf" in msg, msg
        vm.console.sendline("poweroff -f")
        vm.wait_exit(T)
    entry = "loader/entries/bankboot-3-a+1.conf"
    text = "".join(f"options {panicking(line[8:])}\n" if line.startswith("options ") else line
                   for line in fat_read(disk, entry).decode().splitlines(keepends=True))
    fat_write(disk, entry, text.encode(), out)
    with disk_vm(board, disk, out / "boot2", reboot=True) as vm:
        vm.console.expect(r"Kernel panic - not syncing", T)
        st = _up(vm)
        assert st["booted"] == {"slot": "b", "trial": False} and st["good"] == "b"
        assert "bankboot-3-a+0-1.conf" in st["entries"], st


# qemu-armv7 (U-Boot, bootz) and qemu-x86_64 (OVMF + systemd-boot) boot through their firmware in
# tests/vm/test_boards.py, whose disks are made for each board's own firmware.
