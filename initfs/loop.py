"""Attach a file to a free loop device, read-only and auto-clearing (it goes away with its last
mount), with the loop ioctls (linux/loop.h). LOOP_CONFIGURE (Linux 5.8) does it in one call; the older
LOOP_SET_FD + LOOP_SET_STATUS64 pair freezes the device's queue a second time, which waits for an RCU grace
period (a scheduler tick, milliseconds of an idle boot, twice per verified image)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
# struct loop_info64: 5 x u64, 4 x u32 (lo_flags last), file name[64], crypt name[64], key[32], 2 x u64.
_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
# struct loop_config: fd, block_size (0: the default), a loop_info64, 8 reserved u64.
_CONFIG = struct.Struct("=II" + _INFO64.format.lstrip("=") + "8Q")


def attach_readonly(path: str) -> tuple[str, int]:
    """Returns (loop device path, open fd on it). Close the fd once the device is mounted."""
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
    finally:
        os.close(ctl)
    dev = f"/dev/loop{number}"
    loop_fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    file_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fields = (0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                  os.path.basename(path).encode()[:63], b"", b"", 0, 0)
        try:
            fcntl.ioctl(loop_fd, LOOP_CONFIGURE, _CONFIG.pack(file_fd, 0, *fields, *[0] * 8))
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOTTY):  # ENOTTY/EINVAL: a kernel before 5.8
                raise
            fcntl.ioctl(loop_fd, LOOP_SET_FD, file_fd)
            try:
                fcntl.ioctl(loop_fd, LOOP_SET_STATUS64, _INFO64.pack(*fields))
            except OSError:
                fcntl.ioctl(loop_fd, LOOP_CLR_FD, 0)
                raise
    except BaseException:
        os.close(loop_fd)
        raise
    finally:
        os.close(file_fd)
    return dev, loop_fd
