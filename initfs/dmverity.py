"""The image's read-only block devices: dm-verity from Python, with the device-mapper ioctls
(linux/dm-ioctl.h) instead of veritysetup and its library closure (the squashfs is read through a verity
target whose root hash comes from the signed manifest, so a changed block is an I/O error, never silently
different code), over loop devices.

A file is attached to a free loop device, read-only and auto-clearing (it goes away with its last mount),
with the loop ioctls (linux/loop.h). LOOP_CONFIGURE (Linux 5.8) does it in one call; the older LOOP_SET_FD +
LOOP_SET_STATUS64 pair freezes the device's queue a second time, which waits for an RCU grace period (a
scheduler tick, milliseconds of an idle boot, twice per verified image). One module for both: every boot
of a signed image uses both, and a module more costs every boot."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from overlay_layout.errors import BankbootError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.records import Manifest

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


_DM = struct.Struct("=3IIIIiIIIQ128s129s7s")  # struct dm_ioctl, 312 bytes
_SPEC = struct.Struct("=QQiI16s")  # struct dm_target_spec, 40 bytes
_IOWR = (3 << 30) | (_DM.size << 16) | (0xFD << 8)
DM_DEV_CREATE, DM_DEV_REMOVE, DM_DEV_SUSPEND, DM_TABLE_LOAD = _IOWR | 3, _IOWR | 4, _IOWR | 6, _IOWR | 9
DM_READONLY_FLAG = 1
CONTROL = "/dev/mapper/control"


class VerityError(BankbootError):
    pass


def _header(name: str, data_size: int = _DM.size, flags: int = 0, target_count: int = 0) -> bytes:
    return _DM.pack(4, 0, 0, data_size, _DM.size, target_count, 0, flags, 0, 0, 0, name.encode()[:127], b"", b"")


def _ioctl(cmd: int, buf: bytes, what: str) -> bytes:
    if not os.path.exists(CONTROL):
        raise VerityError(f"{CONTROL} is missing: the initramfs needs the dm_mod and dm_verity modules")
    fd = os.open(CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        out = bytearray(buf)
        fcntl.ioctl(fd, cmd, out, True)
        return bytes(out)
    except OSError as e:
        raise VerityError(f"device-mapper {what} failed: {e.strerror}") from e
    finally:
        os.close(fd)


def _devno(path: str) -> str:
    rdev = os.stat(path).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def open_verity(name: str, data: str, hashes: str, manifest: Manifest) -> str:
    """Map `data` (the squashfs file) through dm-verity with the hash tree in `hashes`; returns the
    /dev/dm-N path to mount read-only. Every number comes from the signed manifest (parse_manifest bounds
    them) and is checked against the files first: the mapping covers exactly the signed size, so bytes
    appended to the file are never read, and a short file is refused here rather than failing later."""
    verity = manifest["verity"]
    block, hash_block, size = verity["data_block_size"], verity["hash_block_size"], manifest["size"]
    if size % block:
        raise VerityError(f"the signed size {size} is not a whole number of {block}-byte verity blocks")
    for path, want in ((data, size), (hashes, verity["size"])):
        have = os.stat(path).st_size
        if have < want:
            raise VerityError(f"{path} is {have} bytes, shorter than the {want} the signed manifest says: "
                              f"truncated")
    blocks = size // block
    data_dev, data_fd = attach_readonly(data)
    try:
        hash_dev, hash_fd = attach_readonly(hashes)
    except BaseException:
        os.close(data_fd)  # the loop device clears itself once nothing holds it
        raise
    try:
        params = (f"1 {_devno(data_dev)} {_devno(hash_dev)} {block} {hash_block} {blocks} 0 "
                  f"{verity['hash_algorithm']} {verity['root_hash']} {verity['salt'] or '-'}")
        out = _ioctl(DM_DEV_CREATE, _header(name), "create")
        dev = _DM.unpack(out)[9]
        p = params.encode() + b"\0"
        p += b"\0" * ((8 - (_SPEC.size + len(p)) % 8) % 8)
        spec = _SPEC.pack(0, blocks * block // 512, 0, _SPEC.size + len(p), b"verity") + p
        try:
            _ioctl(DM_TABLE_LOAD, _header(name, _DM.size + len(spec), DM_READONLY_FLAG, 1) + spec, "verity table load")
            _ioctl(DM_DEV_SUSPEND, _header(name), "resume")
        except VerityError:
            close_verity(name)
            raise
    finally:
        os.close(data_fd)
        os.close(hash_fd)
    return f"/dev/dm-{os.minor(dev)}"


def close_verity(name: str) -> None:
    try:
        _ioctl(DM_DEV_REMOVE, _header(name), "remove")
    except VerityError:
        pass
