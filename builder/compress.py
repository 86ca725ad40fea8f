"""Initramfs compression in the formats the kernel's decompressors accept, deterministically."""

from __future__ import annotations

import functools
import gzip
import lzma
import sys

from builder.compresscache import cached_compress
from builder.errors import BuildError
from builder.run import run

# The options matter to the kernel, not just the ratio: its xz decoder knows CRC32 but not CRC64 and
# wants a small dictionary; its lz4 decoder wants the legacy frame format (-l).
ZSTD_LEVEL = 19


class CompressError(BuildError, ValueError):
    """A compression this builder does not write, or data it did not write."""


def compress(data: bytes, method: str) -> bytes:
    """The archive compressed as the kernel wants it; from the cache when these bytes were compressed so
    before (builder/compresscache.py)."""
    if method == "none":
        return data
    if method == "gzip":
        return gzip.compress(data, compresslevel=9, mtime=0)  # fast enough not to cache
    if method == "xz":
        return cached_compress(data, f"xz-crc32-preset9-dict1m-python{sys.version_info[:3]}-lzma", _xz,
                               lambda out: decompress(out, "xz"))
    if method == "zstd":
        # One thread, fixed level: the output depends on nothing but the input.
        cmd = ["zstd", f"-{ZSTD_LEVEL}", "-T1", "-q", "-c", "--no-progress"]
    elif method == "lz4":
        cmd = ["lz4", "-l", "-9", "-q", "-c"]
    else:
        raise CompressError(f"unknown compression {method!r}")
    return cached_compress(data, " ".join(cmd) + " " + tool_version(cmd[0]),
                           lambda raw: run(cmd, input=raw, text=False).stdout, lambda out: decompress(out, method))


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                         filters=[{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": 1 << 20}])


@functools.cache
def tool_version(tool: str) -> str:
    """What names the compressor's build in a cache key (its output could change between versions)."""
    return run([tool, "--version"]).stdout.strip()


MAGIC = {b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz", b"\x02\x21\x4c\x18": "lz4",
         b"070701": "none"}


def detect(data: bytes) -> str:
    """The compression of an initramfs, from its first bytes."""
    for magic, method in MAGIC.items():
        if data.startswith(magic):
            return method
    raise CompressError("not an initramfs this builder writes (unknown compression or not a cpio archive)")


def decompress(data: bytes, method: str) -> bytes:
    """For tests and `bankboot inspect`: the inverse of compress()."""
    if method == "none":
        return data
    if method == "gzip":
        return gzip.decompress(data)
    if method == "xz":
        return lzma.decompress(data)
    cmd = {"zstd": ["zstd", "-d", "-q", "-c"], "lz4": ["lz4", "-d", "-q", "-c"]}[method]
    return run(cmd, input=data, text=False).stdout
