"""A simulated device for the lifecycle and trust scenarios: a disk with image 1.0.0 current, and update
bank files handed to it as a second disk (like a USB stick)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from builder import bankspart
from builder.disk import build_disk
from builder.image import build_image
from builder.lab import faultdisk
from builder.lab.boot import disk_vm
from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
from qemu.vm import VM
from tests.fixtures import DeviceKit

T = 120
PROMPT = r"\(sample\) / # "


def make_device(aarch64, test_dir: Path, built_initramfs, signing_key):
    """The base disk (1.0.0 current) and update banks: good, failing self-test, never marks itself good."""
    board, _, _ = aarch64
    out = test_dir / "lifecycle"
    out.mkdir(exist_ok=True)
    banks = {}
    for name, version, kw in [("base", "1.0.0", {}), ("good", "1.1.0", {}),
                              ("selftest-fails", "1.2.0", {"failing_selftest": True}),
                              ("no-mark-good", "1.3.0", {"mark_good": False}),
                              ("no-boot-ok", "1.4.0", {"boot_ok": False})]:
        rootfs = build_sample_rootfs(board.arch, out / f"rootfs-{name}", version=version, **kw)
        banks[name] = (out / f"{name}.bank", build_image(rootfs, version, out / f"{name}.bank",
                                                         sign_key=signing_key.private, confirm_boots=True,
                                                         persist=SAMPLE_PERSIST))
    disk = out / "base-disk.img"
    build_disk(board, banks["base"][0], disk, 256 << 20, built_initramfs(board))
    return DeviceKit(board, out, disk, banks)


class Device:
    """One device: a copy of the base disk, the update bank as a second disk."""

    def __init__(self, device, name: str, update: str | None) -> None:
        self.board, out, base, self.banks = device.board, device.out, device.disk, device.banks
        self.dir = out / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir()
        self.disk = self.dir / "disk.img"
        shutil.copyfile(base, self.disk)
        self.update = self.banks[update][0] if update else None

    def vm(self, append: str = "") -> VM:
        vm = disk_vm(self.board, self.disk, self.dir, append=append, reboot=True)
        if self.update:
            vm.disks.append(self.update)
        return vm


def sh(vm: VM, cmd: str) -> tuple[int, str]:
    return vm.console.run(cmd, timeout=T)


def up(vm: VM, timeout: float = T) -> str:
    """Wait for the image's init and shell; returns the version the image itself reports (asked of the
    guest: kernel messages may interleave with what its rcS printed)."""
    vm.console.expect(r"sample-rootfs: ready", timeout)
    vm.console.expect(PROMPT, timeout)
    rc, out = vm.console.run("cat /etc/sample-version", timeout=timeout)
    m = re.search(r"\b(\d+\.\d+\.\d+)\b", out)
    assert rc == 0 and m, out
    return m.group(1)


# A line the kernel printed on the console (a warning under load: "hrtimer: interrupt took ..."), which can
# land between the lines of what a command printed.
_KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] .*(\n|$)", re.MULTILINE)


def guest_json(out: str):
    """The JSON a guest command printed, without the kernel's console lines interleaved with it."""
    return json.loads(_KERNEL_LINE.sub("", out))


def status(vm: VM) -> dict:
    rc, out = sh(vm, "bankctl status --json")
    assert rc == 0, out
    return guest_json(out)


def state_of(st: dict, version: str) -> dict:
    return next(i for i in st["images"] if i["version"] == version)


def reboot(vm: VM) -> None:
    """What the sample image's busybox init does at `reboot` (its inittab's shutdown actions: sync, remount
    read-only), without the two seconds it sleeps for the console (SIGTERM, SIGKILL, a pause before the
    reset): a second or two of every reboot of every scenario, nothing of what bankboot does."""
    vm.console.sendline("sync; umount -a -r 2>/dev/null; reboot -f")
    vm.console.expect(r"Booting Linux", T)


def update_to(vm: VM, version: str) -> None:
    """From the base image: stage the update disk, reboot, and see the update come up (it commits itself)."""
    assert up(vm) == "1.0.0"
    rc, out = sh(vm, "bankctl stage /dev/vdb")
    assert rc == 0, out
    reboot(vm)
    assert up(vm) == version


def plant(disk: Path, files: dict[str, str]) -> None:
    """Write files onto the banks partition offline, as someone holding the card would."""
    with bankspart.banks_partition(disk) as part:
        for path, text in files.items():
            faultdisk.plant_file(part, path, text.encode())


def current_of(disk: Path) -> str:
    with bankspart.banks_partition(disk, write=False) as part:
        return bankspart.pointer(part, "current")


def damage_squashfs(vm: VM, image: str, blocks: int) -> None:
    """Random bytes over `blocks` 4 KiB blocks in the middle of an image's squashfs, written on the file
    behind every check, as a bad write or a failing card would (synced to disk)."""
    sq = f"/run/bankboot/banks/overlay/{image}/rootfs.squashfs"
    rc, out = sh(vm, f"size=$(stat -c %s {sq}); dd if=/dev/urandom of={sq} bs=4096 count={blocks} "
                     f"seek=$((size / 2 / 4096)) conv=notrunc 2>/dev/null && sync")
    assert rc == 0, out
