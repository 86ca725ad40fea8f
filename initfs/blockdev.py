"""Block devices, the boot's three kinds: the banks partition found the way root= names it, and the image's
squashfs read through dm-verity over a loop device. One module for all three: every boot of a signed
image uses each, and a module more costs every boot.

root=: a /dev path, PARTUUID= (MBR and GPT), LABEL= or UUID= (ext2/3/4 and FAT labels), read straight from
sysfs and the disks, without blkid.

dm-verity from Python, with the device-mapper ioctls (linux/dm-ioctl.h) instead of veritysetup and its
library closure (the squashfs is read through a verity target whose root hash comes from the signed
manifest, so a changed block is an I/O error, never silently different code), over loop devices.

A file is attached to a free loop device, read-only and auto-clearing (it goes away with its last mount),
with the loop ioctls (linux/loop.h). LOOP_CONFIGURE (Linux 5.8) does it in one call; the older LOOP_SET_FD +
LOOP_SET_STATUS64 pair freezes the device's queue a second time, which waits for an RCU grace period (a
scheduler tick, milliseconds of an idle boot, twice per verified image)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time

from initfs import log
from overlay_layout.errors import BankbootError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.records import Manifest

SYS_BLOCK = "/sys/class/block"


class DeviceNotFound(BankbootError):
    pass


def block_devices() -> list[str]:
    try:
        return sorted(os.listdir(SYS_BLOCK))
    except FileNotFoundError:
        return []


def _read(path: str, offset: int, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
    except OSError:
        return b""


def _guid(raw: bytes) -> str:
    a, b, c = int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:6], "little"), int.from_bytes(raw[6:8], "little")
    return f"{a:08x}-{b:04x}-{c:04x}-{raw[8:10].hex()}-{raw[10:16].hex()}"


def partuuid(name: str) -> str | None:
    """PARTUUID of partition `name`: MBR disk signature + partition number, or the GPT entry's GUID."""
    try:
        with open(f"{SYS_BLOCK}/{name}/partition") as f:
            number = int(f.read())
    except (OSError, ValueError):
        return None
    disk = os.path.basename(os.path.dirname(os.path.realpath(f"{SYS_BLOCK}/{name}")))
    dev = f"/dev/{disk}"
    gpt = _read(dev, 512, 92)
    if gpt[:8] == b"EFI PART":
        entries_lba = int.from_bytes(gpt[72:80], "little")
        entry_size = int.from_bytes(gpt[84:88], "little")
        entry = _read(dev, entries_lba * 512 + (number - 1) * entry_size, 32)
        return _guid(entry[16:32]) if len(entry) == 32 else None
    mbr = _read(dev, 440, 4)
    if len(mbr) != 4:
        return None
    return f"{int.from_bytes(mbr, 'little'):08x}-{number:02x}"


def fs_label_uuid(dev: str) -> tuple[str | None, str | None]:
    sb = _read(dev, 1024, 136)
    if len(sb) == 136 and sb[56:58] == b"\x53\xef":  # ext2/3/4
        return sb[120:136].split(b"\0")[0].decode(errors="replace") or None, _guid_be(sb[104:120])
    boot = _read(dev, 0, 90)
    if len(boot) == 90:
        if boot[82:87] == b"FAT32":
            return boot[71:82].decode(errors="replace").strip() or None, f"{int.from_bytes(boot[67:71], 'little'):08X}"
        if boot[54:57] == b"FAT":
            return boot[43:54].decode(errors="replace").strip() or None, f"{int.from_bytes(boot[39:43], 'little'):08X}"
    return None, None


def _guid_be(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def find_device(spec: str) -> str | None:
    """The /dev path for a root=-style spec, or None if it is not (yet) there."""
    if spec.startswith("/dev/"):
        return spec if os.path.exists(spec) else None
    key, _, value = spec.partition("=")
    if not value or key not in ("PARTUUID", "LABEL", "UUID"):
        raise ValueError(f"cannot understand device {spec!r}: use /dev/NAME, PARTUUID=, LABEL= or UUID=")
    for name in block_devices():
        dev = f"/dev/{name}"
        if key == "PARTUUID":
            if (partuuid(name) or "").lower() == value.lower():
                return dev
        else:
            label, uuid = fs_label_uuid(dev)
            if (key == "LABEL" and label == value) or (key == "UUID" and (uuid or "").lower() == value.lower()):
                return dev
    return None


def wait_for_device(spec: str, timeout: float | None, what: str) -> str:
    """Poll until the device appears. timeout None waits for ever (rootwait), saying so every 10 s."""
    start = time.monotonic()
    next_note = start + 10
    while True:
        dev = find_device(spec)
        if dev is not None and os.path.exists(dev):
            return dev
        now = time.monotonic()
        if timeout is not None and now - start >= timeout:
            raise DeviceNotFound(f"{what} {spec} did not appear within {timeout:.0f} s; block devices present: "
                                 f"{', '.join(block_devices()) or 'none'}")
        if now >= next_note:
            log.log(f"still waiting for {what} {spec}; block devices present: {', '.join(block_devices()) or 'none'}")
            next_note = now + 10
        time.sleep(0.05)


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
