"""Booting a board under QEMU, for tests, benchmarks and people: what a board means for QEMU is decided
here (machine, devices, device tree, console port), and a board boots one of two ways, with a kernel and
initramfs given or from a disk as its firmware would. qemu/ takes the plain result and knows no boards."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from builder.board import Board
from builder.errors import BuildError
from builder.parts import locate_kernel
from qemu.machine import Machine
from qemu.vm import VM


class BootError(BuildError, ValueError):
    """A board or disk that `bankboot qemu` cannot boot (no QEMU machine, no device tree, no command line)."""


def machine_for(board: Board) -> Machine:
    if not board.qemu_system:
        raise BootError(f"board {board.name} has no QEMU machine (real hardware only)")
    dtb = None
    if board.dtb:
        dtb_dir = locate_kernel(board).dtb_dir
        if dtb_dir is None or not (dtb_dir / board.dtb).is_file():
            raise BootError(f"board {board.name}: device tree {board.dtb} not found in the kernel package")
        dtb = seeded_dtb(dtb_dir / board.dtb)
    return Machine(board.name, board.qemu_system, board.qemu_args, board.qemu_disk, board.arch.uname,
                   board.serial_index, dtb, board.qemu_net)


RNG_SEED_BYTES = 64  # what the Pi firmware gives (and QEMU's virt machine)
_seeded: list[Path] = []


def seeded_dtb(dtb: Path) -> Path:
    """A copy of the kernel package's `dtb` with a fresh /chosen/rng-seed, as the board's firmware hands it
    to the kernel (the Raspberry Pi's reads the SoC's RNG into it): QEMU passes a -dtb as it is, and without
    a seed Python's start-up in the init waited 1-2 s for the kernel's random pool, a wait no Pi has. The
    copies live in one directory per process, removed at exit."""
    from builder.lab.devicetree import set_chosen

    if not _seeded:
        _seeded.append(Path(tempfile.mkdtemp(prefix="bankboot-dtb-")))
        atexit.register(shutil.rmtree, _seeded[0], True)
    fd, name = tempfile.mkstemp(suffix=f"-{dtb.name}", dir=_seeded[0])
    with os.fdopen(fd, "wb") as f:
        f.write(set_chosen(dtb.read_bytes(), "rng-seed", os.urandom(RNG_SEED_BYTES)))
    return Path(name)


def firmware_files(board: Board, disk: Path, dest: Path) -> tuple[Path, Path, str]:
    """What the board's firmware loads from the disk's boot partition: (kernel, initramfs, command line)."""
    from builder.disk import read_boot_files

    dest.mkdir(parents=True, exist_ok=True)
    return read_boot_files(disk, dest, board.kernel_name)


def _join(*parts: str) -> str:
    return " ".join(x for x in parts if x)


def board_vm(board: Board, initrd: Path, disks: list[Path] | None = None, append: str = "",
             log_dir: Path | None = None, kernel: Path | None = None, reboot: bool = False,
             cmdline: str | None = None, clock: str = "host") -> VM:
    """The board's kernel (or `kernel`) with `initrd`, on the board's command line (or `cmdline`)."""
    return VM(machine_for(board), kernel or locate_kernel(board).image, initrd,
              _join(board.cmdline if cmdline is None else cmdline, append), disks, log_dir, reboot, clock=clock)


def firmware_args(board: Board, disk: Path, append: str = "") -> list[str] | None:
    """The QEMU arguments of the firmware the disk was made for (builder/firmware), None for a direct boot.
    A firmware reads the command line from the disk, so nothing can be appended here."""
    from builder.firmware import firmware_of, qemu_args

    kind = firmware_of(disk)
    if kind == "direct":
        return None
    if append:
        raise BootError(f"{disk} boots through {kind}, which reads its command line from the disk: give "
                         f"`{append}` to bankboot disk --append instead")
    return qemu_args(kind, board.arch.debian, disk)


def disk_vm(board: Board, disk: Path, log_dir: Path, append: str = "", reboot: bool = False,
            net: bool = False, clock: str = "host") -> VM:
    """Boot a disk as its firmware does: through U-Boot or UEFI when it was made for one (reboot=True keeps
    QEMU running across the guest's resets, as a board's firmware starts again), else with the kernel,
    initramfs and cmdline.txt from its boot partition. net: with a NIC on QEMU's user-mode network. clock:
    qemu.machine.CLOCKS ("icount" for measuring)."""
    firmware = firmware_args(board, disk, append)
    if firmware is not None:
        return VM(machine_for(board), None, None, "", [disk], log_dir, reboot, net, clock, firmware)
    kernel, initrd, cmdline = firmware_files(board, disk, log_dir / "bootfiles")
    return VM(machine_for(board), kernel, initrd, _join(cmdline, append), [disk], log_dir, reboot, net, clock)


def run_interactive(board: Board, initrd: Path, disks: list[Path], append: str = "", from_disk: bool = True,
                    net: bool = False) -> int:
    """`bankboot qemu`: with a disk and from_disk, boot it as firmware would; else the board's kernel with
    `initrd`. The serial console is this process's stdin/stdout."""
    from qemu.interactive import exec_console

    firmware = firmware_args(board, disks[0], append) if disks and from_disk else None
    if firmware is not None:
        return exec_console(machine_for(board), None, None, "", disks, net, firmware)
    if disks and from_disk:
        kernel, initrd, cmdline = firmware_files(board, disks[0], Path(tempfile.mkdtemp(prefix="bankboot-boot-")))
        cmdline = _join(cmdline, append)
    else:
        if not initrd.is_file():
            raise FileNotFoundError(f"{initrd} does not exist: run `make initramfs BOARD={board.name}` first")
        kernel, cmdline = locate_kernel(board).image, _join(board.cmdline, append)
    return exec_console(machine_for(board), kernel, initrd, cmdline, disks, net)
