"""The chunk index of an image's squashfs: the file cut into content-defined chunks, each with its length
and sha256, in order. `bankboot image` writes it into the bank file (rootfs.chunks, covered by the signed
manifest's `chunks`); the device keeps it beside each installed image, so a later update can take every
chunk it already holds from a local image and fetch only the others (docs/lifecycle.md, "Updates over
the network").

Boundaries are content-defined so that bytes inserted or removed early in the file do not move every later
boundary: a chunk ends after an anchor (one of a few fixed pairs of bytes; squashfs data is compressed, so
anchors fall at random, one pair on average every 64 KiB, so four every 16 KiB), at least MIN and at most MAX
bytes after the previous boundary. Finding an anchor is a `bytes.find`, so cutting runs at memory speed.

The sizes were measured on a Debian 12 minbase rootfs (docs/lifecycle.md): an average near 20 KiB fetched
4.6% of the image for one upgraded package where 64 KiB chunks fetched 7.5%, for an index of 0.2% of it."""

from __future__ import annotations

import os
import struct

from overlay_layout import hashing
from overlay_layout.errors import BankbootError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MAGIC = b"bankboot-chunks 1\n"
ENTRY = struct.Struct(">I32s")  # length, sha256
ANCHORS = (b"\x9e\x37", b"\x51\xc4", b"\x2b\xe8", b"\xd6\x0a")
MIN_CHUNK = 4 << 10
MAX_CHUNK = 64 << 10
MEMBER = "rootfs.chunks"  # in the bank file and in the image's directory on the banks partition


class ChunkError(ValueError, BankbootError):
    pass


def cut(data: bytes | memoryview) -> list[int]:
    """The chunk lengths of `data` (they add up to len(data))."""
    lengths = []
    pos, n = 0, len(data)
    view = bytes(data) if isinstance(data, memoryview) else data
    while pos < n:
        end = min(n, pos + MAX_CHUNK)
        stop = end
        for anchor in ANCHORS:
            found = view.find(anchor, pos + MIN_CHUNK - 2, stop)
            if found >= 0:
                stop = found + 2
        lengths.append(stop - pos)
        pos = stop
    return lengths


def index_of(data: bytes) -> list[tuple[int, bytes]]:
    """(length, sha256) of every chunk of `data`."""
    out, pos = [], 0
    for length in cut(data):
        out.append((length, hashing.sha256(data[pos:pos + length]).digest()))
        pos += length
    return out


WINDOW = 8 << 20  # how much of a file index_of_stream holds at once


def index_of_stream(read: Callable[[int], bytes]) -> list[tuple[int, bytes]]:
    """index_of() of a file read piece by piece (`read(n)`, b"" at its end), in memory that does not grow
    with it: where a chunk ends depends only on the MAX_CHUNK bytes after where it starts, so each window is
    cut whole and the chunks that start a full MAX_CHUNK before its end are the whole file's."""
    out: list[tuple[int, bytes]] = []
    buf, eof = b"", False
    while True:
        while not eof and len(buf) < WINDOW + MAX_CHUNK:
            piece = read(WINDOW)
            eof = not piece
            buf += piece
        pos = 0
        for length in cut(buf):
            if not eof and pos + MAX_CHUNK > len(buf):
                break
            out.append((length, hashing.sha256(buf[pos:pos + length]).digest()))
            pos += length
        buf = buf[pos:]
        if eof and not buf:
            return out


def dump(index: list[tuple[int, bytes]]) -> bytes:
    return MAGIC + b"".join(ENTRY.pack(length, digest) for length, digest in index)


def parse(raw: bytes, where: str) -> list[tuple[int, bytes]]:
    if not raw.startswith(MAGIC) or (len(raw) - len(MAGIC)) % ENTRY.size:
        raise ChunkError(f"{where}: not a bankboot chunk index")
    out = [ENTRY.unpack_from(raw, off) for off in range(len(MAGIC), len(raw), ENTRY.size)]
    if any(not 0 < length <= MAX_CHUNK for length, _ in out):
        raise ChunkError(f"{where}: a chunk length is out of range")
    return out


def read(path: str) -> list[tuple[int, bytes]] | None:
    """An image's stored index; None when it has none or it cannot be read (then its chunks are not used)."""
    try:
        with open(path, "rb") as f:
            return parse(f.read(64 << 20), path)
    except (OSError, ChunkError):
        return None


def located(index: list[tuple[int, bytes]], path: str) -> dict[bytes, tuple[str, int, int]]:
    """sha256 -> (file, offset, length) for every chunk of the file the index describes."""
    out: dict[bytes, tuple[str, int, int]] = {}
    pos = 0
    for length, digest in index:
        out.setdefault(digest, (path, pos, length))
        pos += length
    return out


def read_chunk(where: tuple[str, int, int], digest: bytes) -> bytes | None:
    """A chunk from a local file, only if it still has that content (a damaged image is not trusted)."""
    path, offset, length = where
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
    except OSError:
        return None
    return data if len(data) == length and hashing.sha256(data).digest() == digest else None
