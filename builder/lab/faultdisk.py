"""Disk faults written offline into a disk image made by `bankboot disk`, without root or a mount, through
builder/bankspart.py (the banks partition copied out, changed with debugfs or raw writes, and copied back),
as a damaged SD card would present it. Used by the fault campaign (faults.py)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from builder.bankspart import debugfs, partition_range, pointer, read_file
from builder.errors import BuildError


class FaultError(BuildError):
    pass


def replace_file(part: Path, path: str, data: bytes) -> None:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        debugfs(part, f"rm {path}", f"write {f.name} {path}")
    if read_file(part, path) != data:
        raise FaultError(f"{path} on {part} did not take the new content")


def plant_file(part: Path, path: str, data: bytes, mode: int = 0o755) -> None:
    """Write a new file, with its missing parent directories, as someone holding the card would."""
    parts = path.strip("/").split("/")
    dirs = ["/".join(parts[:i]) for i in range(1, len(parts))]
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        debugfs(part, *[f"mkdir {d}" for d in dirs], f"rm {path}", f"write {f.name} {path}",
                f"sif {path} mode 0{0o100000 | mode:o}")
    if read_file(part, path) != data:
        raise FaultError(f"{path} on {part} was not planted")


def set_symlink(part: Path, name: str, target: str) -> None:
    debugfs(part, f"rm overlay/{name}", f"symlink overlay/{name} {target}")
    if pointer(part, name) != target:
        raise FaultError(f"overlay/{name} on {part} did not become a symlink to {target}")


def block_size(part: Path) -> int:
    out = debugfs(part, "stats")
    return int(next(ln for ln in out.splitlines() if ln.startswith("Block size:")).split(":")[1])


def fill(part: Path) -> int:
    """Allocate every free block to a file: the partition full to the last block. Returns the blocks."""
    out = debugfs(part, "stats")
    free = int(next(ln for ln in out.splitlines() if ln.startswith("Free blocks:")).split(":")[1])
    debugfs(part, "write /dev/null filler", f"fallocate filler 0 {free}")
    left = int(next(ln for ln in debugfs(part, "stats").splitlines() if ln.startswith("Free blocks:")).split(":")[1])
    if left > 16:
        raise FaultError(f"{part}: {left} blocks still free after filling it")
    return free


def overwrite_middle(part: Path, path: str, length: int, rng: random.Random) -> int:
    """Random bytes over `length` bytes in the middle of a file, where its blocks lie. Returns the offset
    (in the file) that was hit."""
    out = debugfs(part, f"stat {path}")
    size = int(next(ln for ln in out.splitlines() if "Size:" in ln).split("Size:")[1].split()[0])
    block = block_size(part)
    first = (size // 2) // block
    for i in range(length // block):
        out = debugfs(part, f"bmap {path} {first + i}")
        phys = [ln.strip() for ln in out.splitlines() if ln.strip().isdigit()]
        if not phys:
            raise FaultError(f"debugfs bmap {path} {first + i}: no block number in {out!r}")
        with open(part, "r+b") as f:
            f.seek(int(phys[-1]) * block)
            f.write(rng.randbytes(block))
    return first * block


def wipe_partition(disk: Path, number: int, length: int = 8 << 20) -> None:
    offset, size = partition_range(disk, number)
    with open(disk, "r+b") as f:
        f.seek(offset)
        f.write(b"\0" * min(length, size))

