"""The banks partition of a disk image made by `bankboot disk` (or read off a device's card), on the build
host, without root or a mount: the partition is copied out of the image, its journal replayed, read (and,
for the lab's disk faults, changed) with debugfs from e2fsprogs, and copied back if asked. `bankboot
inspect` reads a disk through this; the fault campaign (lab/faultdisk.py) writes its damage through it."""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from builder.disk import partitions
from builder.errors import BuildError
from builder.run import find_tool, run

SECTOR = 512
BANKS_PARTITION = 2  # p2 (builder/disk.py's layout)


class BanksPartError(BuildError):
    pass


def _debugfs() -> str:
    return find_tool("debugfs", "e2fsprogs", BanksPartError)


def partition_range(disk: Path, number: int) -> tuple[int, int]:
    """(byte offset, byte size) of partition `number` (1-based)."""
    p = partitions(disk)[number - 1]
    return p["start"] * SECTOR, p["size"] * SECTOR


@contextmanager
def banks_partition(disk: Path, write: bool = True):
    """The banks partition (p2) as a file to read or change; written back into the disk on exit (`write`)."""
    offset, size = partition_range(disk, BANKS_PARTITION)
    with tempfile.TemporaryDirectory(prefix="bankboot-banks-") as tmp:
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
    run(["e2fsck", "-fy", str(part)], error=BanksPartError, ok=(0, 1, 2))


def debugfs(part: Path, *commands: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".cmds") as f:
        f.write("\n".join(commands) + "\n")
        f.flush()
        proc = run([_debugfs(), "-w", "-f", f.name, str(part)], error=BanksPartError, what=f"debugfs on {part}")
    return proc.stdout + proc.stderr


def read_file(part: Path, path: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        debugfs(part, f"dump {path} {tmp}/out")
        out = Path(tmp) / "out"
        return out.read_bytes() if out.exists() else b""


def pointer(part: Path, name: str) -> str:
    out = debugfs(part, f"stat overlay/{name}")
    for line in out.splitlines():
        if "Fast link dest:" in line:
            return line.split("Fast link dest:", 1)[1].strip().strip('"')
    raise BanksPartError(f"overlay/{name} is not a symlink: {out[:200]}")


def pointer_or_none(part: Path, name: str) -> str | None:
    out = debugfs(part, f"stat overlay/{name}")
    if "Fast link dest:" not in out:
        return None
    return pointer(part, name)


def state_of(part: Path) -> dict:
    try:
        return json.loads(read_file(part, "state.json") or b"{}")
    except ValueError:
        return {}
