"""Finding block devices the way root= names them: a /dev path, PARTUUID= (MBR and GPT), LABEL= or UUID=
(ext2/3/4 and FAT labels), read straight from sysfs and the disks, without blkid."""

from __future__ import annotations

import os
import time

from initfs import log
from overlay_layout.errors import BankbootError

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
