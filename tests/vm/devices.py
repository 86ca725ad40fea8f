"""A simulated device for the lifecycle and trust scenarios: a disk with image 1.0.0 current, and update
bank files handed to it as a second disk (like a USB stick). Built and booted by the lab's rig
(builder/lab/rig.py), as the fault campaign and the soak build and boot theirs; what is here is the tests'
side: their images, their patience (T) and the asserts."""

from __future__ import annotations

from pathlib import Path

from builder import bankspart
from builder.disk import build_disk
from builder.lab import faultdisk
from builder.lab.rig import copy_device, device_vm, fresh_dir, guest_json, sample_banks, version_up
from qemu.vm import VM
from tests.fixtures import DeviceKit

T = 120


def make_device(aarch64, test_dir: Path, built_initramfs, signing_key):
    """The base disk (1.0.0 current) and update banks: good, failing self-test, never marks itself good."""
    board, _, _ = aarch64
    out = test_dir / "lifecycle"
    out.mkdir(exist_ok=True)
    banks = sample_banks(board, out, [("base", "1.0.0", {}), ("good", "1.1.0", {}),
                                      ("selftest-fails", "1.2.0", {"failing_selftest": True}),
                                      ("no-mark-good", "1.3.0", {"mark_good": False}),
                                      ("no-boot-ok", "1.4.0", {"boot_ok": False})], signing_key.private)
    disk = out / "base-disk.img"
    build_disk(board, banks["base"][0], disk, 256 << 20, built_initramfs(board))
    return DeviceKit(board, out, disk, banks)


class Device:
    """One device: a copy of the base disk, the update bank as a second disk."""

    def __init__(self, device, name: str, update: str | None) -> None:
        self.board, out, base, self.banks = device.board, device.out, device.disk, device.banks
        self.dir = fresh_dir(out / name)
        self.disk = self.dir / "disk.img"
        copy_device(base, self.disk)
        self.update = self.banks[update][0] if update else None

    def vm(self, append: str = "") -> VM:
        return device_vm(self.board, self.disk, self.dir, [self.update] if self.update else [], append, reboot=True)


def sh(vm: VM, cmd: str) -> tuple[int, str]:
    return vm.console.run(cmd, timeout=T)


def up(vm: VM, timeout: float = T) -> str:
    """The version the image up reports (rig.version_up), with the tests' patience."""
    return version_up(vm, timeout)


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
