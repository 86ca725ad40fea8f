"""A writer for the "newc" cpio format the kernel unpacks as initramfs (Documentation/driver-api/
early-userspace/buffer-format.rst). Our own, because it must write device nodes without root and be
reproducible: entries sorted, inodes numbered in that order, owner 0:0, one fixed mtime."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from builder.errors import BuildError
from builder.fstree import FsTree

_KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
              "char": stat.S_IFCHR, "block": stat.S_IFBLK}
TRAILER = "TRAILER!!!"


class CpioError(BuildError, ValueError):
    """A newc archive that cannot be written reproducibly or read back."""


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH when set (reproducible-builds.org convention), else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        return int(value)
    except ValueError:
        raise CpioError(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds") from None


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int], name: bytes) -> bytes:
    fields = [ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def write_entry(out: BinaryIO, ino: int, name: str, mode: int, nlink: int, mtime: int, data: bytes,
                rdev: tuple[int, int] = (0, 0)) -> int:
    """Write one entry; returns the number of bytes written."""
    bname = name.encode()
    head = _header(ino, mode, nlink, mtime, len(data), rdev, bname) + bname + b"\0"
    chunk = head + _pad(len(head)) + data + _pad(len(data))
    out.write(chunk)
    return len(chunk)


def read_cpio(data: bytes) -> dict[str, bytes]:
    """The regular files of a newc archive, by path (what `bankboot disk` and `inspect` read of an
    initramfs: its trusted keys and initramfs.conf)."""
    files: dict[str, bytes] = {}
    pos = 0
    while pos + 110 <= len(data):
        if data[pos:pos + 6] not in (b"070701", b"070702"):
            raise CpioError(f"not a newc cpio archive (bad magic at byte {pos})")
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_end = pos + 110 + namesize
        name = data[pos + 110:name_end - 1].decode(errors="replace")
        start = name_end + (4 - name_end % 4) % 4
        if name == TRAILER:
            break
        if stat.S_ISREG(mode):
            files[name.removeprefix("./")] = data[start:start + size]
        pos = start + size + (4 - size % 4) % 4
    return files


def write_cpio(tree: FsTree, out: BinaryIO, mtime: int | None = None) -> None:
    """Write the whole tree. Sorting by path puts every directory before its contents (the kernel needs
    a directory to exist before it creates files in it)."""
    if mtime is None:
        mtime = source_date_epoch()
    ino = 0
    for path in sorted(tree.entries):
        e = tree.entries[path]
        ino += 1
        if e.kind == "symlink":
            data = (e.target or "").encode()
        elif e.kind == "file":
            data = e.read()
        else:
            data = b""
        nlink = 2 if e.kind == "dir" else 1
        write_entry(out, ino, path, _KIND_BITS[e.kind] | e.mode, nlink, mtime, data, e.rdev)
    write_entry(out, 0, TRAILER, 0, 1, 0, b"")
