"""The lab's device, built and driven one way for everything that boots one: the fault campaign (faults.py), the
soak (soak.py) and the VM tests (tests/vm/devices.py).

- its images: the sample rootfs (samplerootfs.py) of a version and behaviour, made a signed bank file, and an
  initramfs that trusts the key it is signed with;
- its disk: a copy of one made by `bankboot disk`, with the firmware's own storage beside it (U-Boot's
  environment, UEFI's variables), which is part of the device as much as the disk is;
- a boot: the disk booted as its firmware would (boot.disk_vm), with update bank files handed to it as further
  disks (/dev/vdb, ...; a USB stick);
- what the guest says: when its image is up, which version it is, JSON a command printed without the kernel's
  console lines a loaded host interleaves with it.

Nothing here checks an outcome: the campaign, the soak and the tests each say what they expect."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from builder.board import Board
from builder.disk import boot_fat, mtools_env
from builder.errors import BuildError
from builder.lab.boot import disk_vm
from builder.run import run
from qemu.vm import VM

UP = rb"sample-rootfs: ready"  # the sample image's rcS, once it has marked its boot (samplerootfs.py)
PROMPT = r"\(sample\) / # "  # its shell
UP_OR_NOT = rb"(sample-rootfs: ready|rescue\) / # |Kernel panic)"  # the image, the init's rescue shell, or neither
BOOT_TIMEOUT = 180.0  # OVMF's boots and a loaded 2-core host take their time
NO_PROMPT = "bankboot.timeout=0"  # no ESC window: a boot goes straight on
FIRMWARE_STATE = (".uboot-env", ".efivars")  # beside a disk: what boot.disk_vm gives the firmware to keep
# A line the kernel printed on the console (a warning under load: "hrtimer: interrupt took ..."), which can
# land between the lines of what a command printed.
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] .*(\n|$)", re.MULTILINE)


# -- images ---------------------------------------------------------------------------------------------------
def signed_initramfs(board: Board, out: Path, name: str, comment: str) -> tuple[Path, Path]:
    """(an initramfs for `board` that trusts only a key of the rig's own, that key's private half), made once
    in `out` (keys/<name>.key, .pub; initramfs.img)."""
    from builder.initramfs import TrustPolicy, build_initramfs
    from builder.keys import keygen

    key = out / "keys" / name
    if not key.with_suffix(".key").exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        keygen(key, comment)
    initrd = build_initramfs(board, out / "initramfs.img", policy=TrustPolicy(keys=(key.with_suffix(".pub"),))).path
    return initrd, key.with_suffix(".key")


class GuestError(BuildError, AssertionError):
    """A command that failed in the guest, or a guest that reports no version; an AssertionError, which
    the labs catch with a console timeout."""


def sample_rootfs(board: Board, dest: Path, version: str, **behaviour: bool) -> Path:
    """The sample rootfs of `version`, behaving as `behaviour` says (samplerootfs.build_sample_rootfs's
    mark_good, failing_selftest, boot_ok)."""
    from builder.lab.samplerootfs import build_sample_rootfs

    return build_sample_rootfs(board.arch, dest, version=version, **behaviour)


def sample_bank(rootfs: Path, version: str, bank: Path, sign_key: Path) -> dict[str, Any]:
    """`rootfs` made the signed bank file `bank`, as the sample images are: confirming its boots, keeping the
    sample's persistent paths. Returns its manifest."""
    from builder.image import build_image
    from builder.lab.samplerootfs import SAMPLE_PERSIST

    bank.parent.mkdir(parents=True, exist_ok=True)
    return build_image(rootfs, version, bank, sign_key=sign_key, confirm_boots=True, persist=SAMPLE_PERSIST)


def sample_banks(board: Board, out: Path, images: list[tuple[str, str, dict[str, bool]]], sign_key: Path,
                 payload_mb: dict[str, int] | None = None) -> dict[str, tuple[Path, dict[str, Any]]]:
    """images: (name, version, behaviour). Each becomes out/<name>.bank from out/rootfs-<name>. payload_mb:
    name -> that many MB of incompressible bytes in the image (/var/payload), so its stage takes a while.
    Returns name -> (bank file, manifest)."""
    banks = {}
    for name, version, behaviour in images:
        rootfs = sample_rootfs(board, out / f"rootfs-{name}", version, **behaviour)
        if (payload_mb or {}).get(name):
            (rootfs / "var/payload").write_bytes(random.Random(1).randbytes((payload_mb or {})[name] << 20))
        bank = out / f"{name}.bank"
        banks[name] = (bank, sample_bank(rootfs, version, bank, sign_key))
    return banks


# -- disks ----------------------------------------------------------------------------------------------------
def copy_device(src: Path, dest: Path) -> None:
    """A device is its disk and its firmware's own storage beside it (U-Boot's environment, UEFI's variables).
    The disk is copied sparse (it is mostly empty)."""
    if dest.exists():
        dest.unlink()
    run(["cp", "--sparse=always", str(src), str(dest)], error=BuildError)
    for suffix in FIRMWARE_STATE:
        a, b = src.with_name(src.name + suffix), dest.with_name(dest.name + suffix)
        if a.exists():
            shutil.copyfile(a, b)
        else:
            b.unlink(missing_ok=True)


def fat_read(disk: Path, name: str) -> bytes:
    return subprocess.run(["mtype", "-i", boot_fat(disk), f"::{name}"], env=mtools_env(), check=True,
                          capture_output=True).stdout


def fat_write(disk: Path, name: str, data: bytes, tmp: Path) -> None:
    """What a person (or a bad card) does to the boot FAT between two power-ons."""
    f = tmp / "fat-put"
    f.write_bytes(data)
    subprocess.run(["mcopy", "-o", "-i", boot_fat(disk), str(f), f"::{name}"], env=mtools_env(), check=True)


def boot_entries(disk: Path) -> list[str]:
    """The systemd-boot entries on the boot FAT of a disk for UEFI (loader/entries/*.conf)."""
    listing = subprocess.run(["mdir", "-b", "-i", boot_fat(disk), "::/loader/entries"], env=mtools_env(),
                             capture_output=True, text=True, check=True).stdout
    return [line.split("::/")[-1] for line in listing.splitlines() if line.endswith(".conf")]


def fresh_dir(path: Path) -> Path:
    """An empty directory at `path` (a boot's console log and boot files: the last run's are dropped)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# -- booting ----------------------------------------------------------------------------------------------------
def device_vm(board: Board, disk: Path, log_dir: Path, updates: tuple[Path, ...] | list[Path] = (), append: str = "",
              reboot: bool = False) -> VM:
    """The device booting `disk` as its firmware would, with `updates` (bank files) as its next disks. Without
    `reboot`, a guest reboot makes QEMU exit (-no-reboot): each boot is then counted by the caller. Not started."""
    vm = disk_vm(board, disk, log_dir, append=append, reboot=reboot)
    vm.disks.extend(updates)
    return vm


def came_up(vm: VM, timeout: float = BOOT_TIMEOUT, prompt_timeout: float = 60.0) -> bool:
    """Whether the boot ended in the image's shell (True) or in the init's rescue shell or a kernel panic
    (False). Raises qemu.console.ConsoleTimeout when neither came (a hang, or a reboot that ended QEMU)."""
    m = vm.console.expect(UP_OR_NOT, timeout)
    if m.group(1) != UP:
        return False
    vm.console.expect(PROMPT, prompt_timeout)
    return True


def sh(vm: VM, cmd: str, timeout: float = 180.0) -> str:
    """What `cmd` printed in the guest; a command that fails is a GuestError (an AssertionError) naming it."""
    rc, out = vm.console.run(cmd, timeout=timeout)
    if rc != 0:
        raise GuestError(f"`{cmd}` exited {rc} in the guest: {out.strip()[-500:]}")
    return out


def version_up(vm: VM, timeout: float = BOOT_TIMEOUT) -> str:
    """Wait for the image's init and shell; the version the image itself reports (asked of the guest, not
    taken from the console: kernel messages may interleave with what its rcS printed)."""
    vm.console.expect(UP, timeout)
    vm.console.expect(PROMPT, timeout)
    out = sh(vm, "cat /etc/sample-version", timeout)
    m = re.search(r"\b(\d+\.\d+\.\d+)\b", out)
    if not m:
        raise GuestError(f"the image reports no version: {out!r}")
    return m.group(1)


def without_kernel_lines(out: str) -> str:
    """What a guest command printed, without the kernel's console lines interleaved with it."""
    return KERNEL_LINE.sub("", out.replace("\r", ""))


def guest_json(out: str) -> Any:
    """The JSON a guest command printed (bankctl status --json, bankctl log --json)."""
    return json.loads(without_kernel_lines(out))


def write_userdata(vm: VM, path: str, size: int) -> tuple[str, int]:
    """`size` random bytes written to `path` in the guest and fsynced: (their sha256, size)."""
    out = sh(vm, f"head -c {size} /dev/urandom > {path} && sync; sha256sum {path}")
    return without_kernel_lines(out).split()[0], size


def power_off(vm: VM) -> None:
    """Everything synced, then off. A Pi under QEMU only halts on `poweroff -f`: the plug is pulled after a
    while, which after the sync loses nothing."""
    sh(vm, "sync")
    vm.console.sendline("poweroff -f")
    try:
        vm.wait_exit(20)
    except subprocess.TimeoutExpired:
        vm.power_cut()
