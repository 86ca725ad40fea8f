"""Reading a squashfs 4.0 image's directory tree and where each file's data lies, on the build host: the
byte ranges of the image's init and its libraries go into the signed manifest (`preflight`), so the
device can prove they read back through dm-verity by reading those compressed bytes, without
decompressing the files (initfs/preflight.py). Only what that needs: lookups, symlinks, data blocks and
fragments; metadata in any compression the builder writes (zstd), or stored."""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import PurePosixPath

from builder.errors import BuildError

MAGIC = 0x73717368
COMPRESSORS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
_SUPER = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")
METADATA_SIZE = 8192
NO_FRAGMENT = 0xFFFFFFFF
UNCOMPRESSED_BLOCK = 1 << 24
DIR_TYPES, FILE_TYPES, LINK_TYPES = (1, 8), (2, 9), (3, 10)


class SquashfsError(BuildError, ValueError):
    pass


def _decompress(method: str, data: bytes) -> bytes:
    if method == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=METADATA_SIZE)
    if method == "gzip":
        import zlib

        return zlib.decompress(data)
    if method == "xz":
        import lzma

        return lzma.decompress(data)
    raise SquashfsError(f"metadata compressed with {method}: not read here")


class Squashfs:
    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:  # mapped, not read: an image of any size costs only the pages looked at
            if os.fstat(f.fileno()).st_size < _SUPER.size:
                raise SquashfsError(f"{path}: too short for a squashfs")
            self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        (magic, _inodes, _mtime, self.block_size, _frags, comp, _log, _flags, _ids, major, _minor, self.root,
         self.bytes_used, _id_table, _xattr, self.inode_table, self.dir_table, self.fragment_table,
         _export) = _SUPER.unpack_from(self.data)
        if magic != MAGIC or major != 4:
            raise SquashfsError(f"{path}: not a squashfs 4.0 image")
        self.compression = COMPRESSORS.get(comp, f"compressor {comp}")
        self._blocks: dict[int, tuple[bytes, int]] = {}

    # -- metadata ----------------------------------------------------------------------------------------
    def _block(self, pos: int) -> tuple[bytes, int]:
        """The metadata block at absolute `pos`: (its uncompressed bytes, where the next block starts)."""
        if pos not in self._blocks:
            if pos + 2 > len(self.data):
                raise SquashfsError(f"{self.path}: metadata block at {pos} is past the end")
            header, = struct.unpack_from("<H", self.data, pos)
            size = header & 0x7FFF
            raw = self.data[pos + 2:pos + 2 + size]
            self._blocks[pos] = (raw if header & 0x8000 else _decompress(self.compression, raw), pos + 2 + size)
        return self._blocks[pos]

    def _read(self, table: int, block: int, offset: int, size: int) -> bytes:
        """`size` bytes of metadata from block `block` (relative to `table`) at `offset`, across blocks."""
        out = b""
        pos = table + block
        while len(out) < offset + size:
            data, pos = self._block(pos)
            out += data
        return out[offset:offset + size]

    # The fixed part of each inode type this reader uses, header included.
    _SIZES = {1: 32, 8: 40, 2: 32, 9: 56, 3: 24, 10: 24}

    def _inode(self, ref: int) -> tuple[int, bytes]:
        """(type, the inode's fixed part) at reference `ref` (block relative to the inode table, offset)."""
        block, offset = ref >> 16, ref & 0xFFFF
        kind, = struct.unpack_from("<H", self._read(self.inode_table, block, offset, 2))
        return kind, self._read(self.inode_table, block, offset, self._SIZES.get(kind, 16))

    def _listing(self, body: bytes, kind: int) -> dict[str, int]:
        """A directory's entries: name -> inode reference."""
        if kind == 1:
            block, _links, size, offset, _parent = struct.unpack_from("<IIHHI", body, 16)
        else:
            _links, size, block, _parent, _count, offset, _xattr = struct.unpack_from("<IIIIHHI", body, 16)
        data = self._read(self.dir_table, block, offset, max(0, size - 3))
        entries, pos = {}, 0
        while pos + 12 <= len(data):
            count, start, _number = struct.unpack_from("<III", data, pos)
            pos += 12
            for _ in range(count + 1):
                off, _delta, _type, name_size = struct.unpack_from("<HhHH", data, pos)
                name = data[pos + 8:pos + 9 + name_size].decode("utf-8", "surrogateescape")
                entries[name] = (start << 16) | off
                pos += 9 + name_size
        return entries

    # -- paths -------------------------------------------------------------------------------------------
    def lookup(self, path: str, hops: int = 40) -> tuple[int, int, bytes, str]:
        """The inode at `path` inside the image, symlinks followed as the image's kernel would (absolute
        targets inside the image): (type, reference, inode bytes, the path without symlinks)."""
        parts = [p for p in PurePosixPath(path).parts if p != "/"]
        done: list[tuple[str, int]] = []  # (name, reference) from the root down
        ref = self.root
        while parts:
            name = parts.pop(0)
            if name == ".":
                continue
            if name == "..":
                done = done[:-1]
                ref = done[-1][1] if done else self.root
                continue
            kind, body = self._inode(ref)
            if kind not in DIR_TYPES:
                raise SquashfsError(f"{self.path}: {_shown(done)} is not a directory")
            entries = self._listing(body, kind)
            if name not in entries:
                raise SquashfsError(f"{self.path}: no {_shown([*done, (name, 0)])}")
            child = entries[name]
            ckind, cbody = self._inode(child)
            if ckind in LINK_TYPES:
                hops -= 1
                if hops < 0:
                    raise SquashfsError(f"{self.path}: too many levels of symlinks at {path}")
                size, = struct.unpack_from("<I", cbody, 20)
                block, offset = child >> 16, child & 0xFFFF
                target = self._read(self.inode_table, block, offset + 24, size).decode("utf-8", "surrogateescape")
                parts = [p for p in PurePosixPath(target).parts if p != "/"] + parts
                if target.startswith("/"):
                    done = []
                ref = done[-1][1] if done else self.root
                continue
            done.append((name, child))
            ref = child
        kind, body = self._inode(ref)
        return kind, ref, body, _shown(done)

    # -- data --------------------------------------------------------------------------------------------
    def extents(self, path: str) -> list[tuple[int, int]]:
        """(offset, length) in the image of every byte that holds `path`'s data: its blocks and, for a tail
        kept in a fragment, that fragment block (compressed sizes: what the device reads back)."""
        kind, ref, body, real = self.lookup(path)
        if kind not in FILE_TYPES:
            raise SquashfsError(f"{self.path}: {real} is not a regular file")
        if kind == 2:
            start, frag, _frag_off, size = struct.unpack_from("<IIII", body, 16)
        else:
            start, size, _sparse, _links, frag, _frag_off, _xattr = struct.unpack_from("<QQQIIII", body, 16)
        count = size // self.block_size if frag != NO_FRAGMENT else -(-size // self.block_size)
        block, offset = ref >> 16, ref & 0xFFFF
        table = self._read(self.inode_table, block, offset + len(body), 4 * count)
        out, pos = [], start
        for s in struct.unpack_from(f"<{count}I", table):
            length = s & (UNCOMPRESSED_BLOCK - 1)
            if length:
                out.append((pos, length))
            pos += length
        if frag != NO_FRAGMENT:
            out.append(self._fragment(frag))
        return out

    def read_file(self, path: str) -> bytes:
        """A file's contents, rebuilt from its blocks and fragment (for checking extents() against the
        rootfs: the bytes it names must be exactly the file's)."""
        kind, ref, body, real = self.lookup(path)
        if kind not in FILE_TYPES:
            raise SquashfsError(f"{self.path}: {real} is not a regular file")
        if kind == 2:
            start, frag, frag_off, size = struct.unpack_from("<IIII", body, 16)
        else:
            start, size, _sparse, _links, frag, frag_off, _xattr = struct.unpack_from("<QQQIIII", body, 16)
        count = size // self.block_size if frag != NO_FRAGMENT else -(-size // self.block_size)
        block, offset = ref >> 16, ref & 0xFFFF
        table = self._read(self.inode_table, block, offset + len(body), 4 * count)
        out, pos = bytearray(), start
        for s in struct.unpack_from(f"<{count}I", table):
            length = s & (UNCOMPRESSED_BLOCK - 1)
            raw = self.data[pos:pos + length]
            out += raw if s & UNCOMPRESSED_BLOCK or not length else self._data_block(raw)
            if not length:
                out += bytes(self.block_size)
            pos += length
        if frag != NO_FRAGMENT:
            where, = struct.unpack_from("<Q", self.data, self.fragment_table + 8 * (frag // 512))
            fstart, fsize, _ = struct.unpack_from("<QII", self._read(where, 0, (frag % 512) * 16, 16))
            raw = self.data[fstart:fstart + (fsize & (UNCOMPRESSED_BLOCK - 1))]
            tail = raw if fsize & UNCOMPRESSED_BLOCK else self._data_block(raw)
            out += tail[frag_off:frag_off + size - len(out)]
        return bytes(out[:size])

    def _data_block(self, raw: bytes) -> bytes:
        if self.compression == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompress(raw, max_output_size=self.block_size)
        return _decompress(self.compression, raw)

    def _fragment(self, index: int) -> tuple[int, int]:
        where, = struct.unpack_from("<Q", self.data, self.fragment_table + 8 * (index // 512))
        entry = self._read(where, 0, (index % 512) * 16, 16)
        start, size, _unused = struct.unpack_from("<QII", entry)
        return start, size & (UNCOMPRESSED_BLOCK - 1)


def _shown(done: list[tuple[str, int]]) -> str:
    return "/" + "/".join(name for name, _ in done)


def merge_ranges(extents: list[tuple[int, int]], align: int = 4096) -> list[list[int]]:
    """Sorted, merged [offset, length] ranges, widened to whole `align` blocks (dm-verity checks blocks)."""
    spans = sorted((o // align * align, -(-(o + n) // align) * align) for o, n in extents if n > 0)
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi - merged[-1][0])
        else:
            merged.append([lo, hi - lo])
    return merged
