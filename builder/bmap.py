"""Sparse disk images and their block maps. `bankboot disk` writes only the blocks its filesystems use (the
rest stays a hole in the image file), and beside it a .bmap in bmap-tools' format, so `bmaptool copy
disk.img /dev/sdX` writes just those blocks, each checked against its sha256, as Yocto users flash.

What a filesystem needs to read back as zeros must be data, not a hole, or a card that held something
before keeps it there: mke2fs would make its zeroed inode tables and journal holes (unwritten extents), so
it is told to write them (UNIX_IO_NOZEROOUT, `mkfs_env`)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from builder.run import run

COPY = 4 << 20


def mkfs_env() -> dict[str, str]:
    """The environment for mke2fs: zeroed regions written, never punched or left unwritten."""
    return {**os.environ, "UNIX_IO_NOZEROOUT": "1"}


def data_extents(fd: int) -> list[tuple[int, int]]:
    """(start, end) of every region of the open file that holds data (SEEK_DATA/SEEK_HOLE)."""
    out, pos, end = [], 0, os.fstat(fd).st_size
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole from here on
                break
            raise
        stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
        out.append((start, stop))
        pos = stop
    return out


def copy_sparse(src: Path, dst_fd: int, offset: int) -> int:
    """Copy `src` into the open `dst_fd` at `offset`, its holes left holes there. Returns the bytes copied."""
    done = 0
    with open(src, "rb") as f:
        for start, stop in data_extents(f.fileno()):
            pos = start
            while pos < stop:
                data = os.pread(f.fileno(), min(COPY, stop - pos), pos)
                if not data:
                    raise OSError(f"{src} ended at byte {pos} while being copied")
                os.pwrite(dst_fd, data, offset + pos)
                pos += len(data)
                done += len(data)
    return done


def write_bmap(image: Path, bmap: Path, error: type[Exception]) -> Path:
    """bmap-tools' block map of `image` (its data blocks and their sha256), by bmaptool itself."""
    run(["bmaptool", "create", "-o", str(bmap), str(image)], error=error, package="bmap-tools",
        what=f"bmaptool create {image.name}")
    return bmap
