"""The few system calls the init needs that `os` lacks (mount, umount2, finit_module, kexec_file_load,
reboot), through the `_bankboot` module of the init's libpython (overlay_layout/native.py); this module words
their errors, naming what failed."""

from __future__ import annotations

import os

from overlay_layout.native import api

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MNT_DETACH = 2

MODULE_INIT_COMPRESSED_FILE = 4


def _check(err: int, what: str) -> None:
    if err != 0:
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(api.mount(source, target, fstype or None, flags, data or None),
           f"mount {source} on {target} ({fstype or 'no type'}, {data or 'no options'})")


def umount(target: str, flags: int = 0) -> None:
    _check(api.umount2(target, flags), f"umount {target}")


def finit_module(fd: int, params: str = "", flags: int = 0) -> None:
    err = api.finit_module(fd, params, flags)
    if err != 0:
        raise OSError(err, os.strerror(err))


def kexec_file_load(kernel_fd: int, initrd_fd: int, cmdline: str) -> None:
    err = api.kexec_file_load(kernel_fd, initrd_fd, cmdline, 0)  # ENOSYS too where the architecture has none
    if err != 0:
        raise OSError(err, os.strerror(err))


RB_AUTOBOOT = 0x01234567
LINUX_REBOOT_CMD_KEXEC = 0x45584543


def reboot(cmd: int = RB_AUTOBOOT) -> None:
    """reboot(2) at once (the caller synced): the kernel restarts the machine, or with
    LINUX_REBOOT_CMD_KEXEC starts the kernel loaded by kexec."""
    _check(api.reboot(cmd), "reboot")
