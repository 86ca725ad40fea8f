"""`bankboot delta OLD.bank NEW.bank`: how much of NEW a device holding OLD fetches over the network
(`bankctl stage URL` takes every chunk it already holds from its installed images): the update's real size
on the wire, known before it is published."""

from __future__ import annotations

from pathlib import Path

from builder.image import ImageError, read_bank
from overlay_layout import chunks


def chunk_index(path: Path) -> list[tuple[int, bytes]]:
    with read_bank(path) as bank:
        member = bank.members.get(chunks.MEMBER)
        if member is None:
            raise ImageError(f"{path} has no chunk index (made by an older bankboot image): a device fetches "
                             f"all of it")
        with open(path, "rb") as f:
            f.seek(member.offset)
            raw = f.read(member.size)
    return chunks.parse(raw, f"{path}:{chunks.MEMBER}")


def delta(old: list[Path], new: Path) -> tuple[int, int]:
    """(bytes NEW's squashfs needs from the network, its size) for a device holding the images `old`."""
    held = {digest for path in old for _, digest in chunk_index(path)}
    index = chunk_index(new)
    return sum(length for length, digest in index if digest not in held), sum(length for length, _ in index)
