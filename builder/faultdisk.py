"""Disk faults written offline into a disk image made by `bankboot disk`, without root or a mount: the
banks partition is copied out, changed with debugfs (e2fsprogs) or raw writes, and copied back, as a
damaged SD card would present it. Used by the fault campaign (faults.py)."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from builder.disk import partitions
from builder.run import find_tool, run

SECTOR = 512


class FaultError(RuntimeError):
    pass


def _debugfs() -> str:
    return find_tool("debugfs", "e2fsprogs", FaultError)


def partition_range(disk: Path, number: int) -> tuple[int, int]:
    """(byte offset, byte size) of partition `number` (1-based)."""
    p = partitions(disk)[number - 1]
    return p["start"] * SECTOR, p["size"] * SECTOR


@contextmanager
def banks_partition(disk: Path, write: bool = True):
    """The banks partition (p2) as a file to change; written back into the disk on exit (`write`)."""
    offset, size = partition_range(disk, 2)
    with tempfile.TemporaryDirectory(prefix="bankboot-fault-") as tmp:
        part = Path(tmp) / "banks.ext4"
        with open(disk, "rb") as src, open(part, "wb") as dst:
            src.seek(offset)
            left = size
            while left:
                chunk = src.read(min(left, 4 << 20))
                dst.write(chunk)
                left -= len(chunk)
        replay_journal(part)
        yield part
        if not write:
            return
        with open(part, "rb") as src, open(disk, "r+b") as dst:
            dst.seek(offset)
            shutil.copyfileobj(src, dst, 4 << 20)


def replay_journal(part: Path) -> None:
    """A disk cut or powered off with committed journal transactions not yet written home: the kernel
    replays them at mount, which would undo (or worse, mix with) a change made offline. Replay first."""
    run(["e2fsck", "-fy", str(part)], error=FaultError, ok=(0, 1, 2))


def debugfs(part: Path, *commands: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".cmds") as f:
        f.write("\n".join(commands) + "\n")
        f.flush()
        proc = run([_debugfs(), "-w", "-f", f.name, str(part)], error=FaultError, what=f"debugfs on {part}")
    return proc.stdout + proc.stderr


def read_file(part: Path, path: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        debugfs(part, f"dump {path} {tmp}/out")
        out = Path(tmp) / "out"
        return out.read_bytes() if out.exists() else b""


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


def pointer(part: Path, name: str) -> str:
    out = debugfs(part, f"stat overlay/{name}")
    for line in out.splitlines():
        if "Fast link dest:" in line:
            return line.split("Fast link dest:", 1)[1].strip().strip('"')
    raise FaultError(f"overlay/{name} is not a symlink: {out[:200]}")


def pointer_or_none(part: Path, name: str) -> str | None:
    out = debugfs(part, f"stat overlay/{name}")
    if "Fast link dest:" not in out:
        return None
    return pointer(part, name)


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


def state_of(part: Path) -> dict:
    try:
        return json.loads(read_file(part, "state.json") or b"{}")
    except ValueError:
        return {}


def copy_disk(src: Path, dst: Path) -> None:
    """A sparse copy (the disks are mostly empty)."""
    if dst.exists():
        dst.unlink()
    run(["cp", "--sparse=always", str(src), str(dst)], error=FaultError)
