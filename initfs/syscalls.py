"""The few system calls the init needs that `os` lacks (mount, umount2, finit_module), through ctypes on
the libc already loaded into the process."""

from __future__ import annotations

import ctypes
import os

from overlay_layout.contract import Arch, UnknownArch, arch_of_machine

_libc = ctypes.CDLL(None, use_errno=True)

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


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    ret = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                      ctypes.c_ulong(flags), data.encode() if data else None)
    _check(ret, f"mount {source} on {target} ({fstype or 'no type'}, {data or 'no options'})")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def _this_arch() -> Arch:
    try:
        return arch_of_machine(os.uname().machine)
    except UnknownArch as e:
        raise OSError(38, str(e)) from e


def finit_module(fd: int, params: str = "", flags: int = 0) -> None:
    nr = _this_arch().finit_module
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(fd), ctypes.c_char_p(params.encode()),
                        ctypes.c_int(flags))
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def kexec_file_load(kernel_fd: int, initrd_fd: int, cmdline: str) -> None:
    nr = _this_arch().kexec_file_load
    if nr is None:
        raise OSError(38, f"kexec_file_load: this machine ({os.uname().machine}) has none")
    text = cmdline.encode() + b"\0"
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(kernel_fd), ctypes.c_int(initrd_fd),
                        ctypes.c_ulong(len(text)), ctypes.c_char_p(text), ctypes.c_ulong(0))
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


RB_AUTOBOOT = 0x01234567
LINUX_REBOOT_CMD_KEXEC = 0x45584543


def reboot(cmd: int = RB_AUTOBOOT) -> None:
    """reboot(2) at once (the caller synced): the kernel restarts the machine, or with
    LINUX_REBOOT_CMD_KEXEC starts the kernel loaded by kexec."""
    _check(_libc.reboot(ctypes.c_int(cmd)), "reboot")
