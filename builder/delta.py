"""`bankboot delta OLD.bank NEW.bank`: how much of NEW a device holding OLD fetches over the network
(`bankctl stage URL` takes every chunk it already holds from its installed images): the update's real size
on the wire, known before it is published."""

from __future__ import annotations

from pathlib import Path

from builder.image import ImageError, read_bank
from overlay_layout import chunks
from overlay_layout.layout import LayoutError


def chunk_index(path: Path, device_key: Path | None = None) -> list[tuple[int, bytes]]:
    """The bank's chunk index (an encrypted bank's decrypted with `device_key`, a recipient's key)."""
    with read_bank(path) as bank:
        member = bank.members.get(chunks.MEMBER)
        if member is None:
            raise ImageError(f"{path} has no chunk index (made by an older bankboot image): a device fetches "
                             f"all of it")
        raw = bank.read(member.offset, member.size)
        if bank.encrypted:
            from overlay_layout import encryption, x25519

            if device_key is None:
                raise ImageError(f"{path} is encrypted: give --device-key KEY (a recipient's private key)")
            try:
                key = encryption.content_key(bank.manifest, str(device_key), str(path))
            except LayoutError as e:
                raise ImageError(str(e)) from None
            plain = x25519.decrypt(raw, encryption.associated(bank.manifest, chunks.MEMBER),
                                   encryption.nonce(encryption.NONCE_INDEX), key)
            if plain is None:
                raise ImageError(f"{path}: its chunk index fails its authentication tag (damaged or changed)")
            raw = plain
    return chunks.parse(raw, f"{path}:{chunks.MEMBER}")


def delta(old: list[Path], new: Path, device_key: Path | None = None) -> tuple[int, int]:
    """(bytes NEW's squashfs needs from the network, its size) for a device holding the images `old`. An
    encrypted NEW fetches 16 bytes more per chunk it fetches (each chunk's tag)."""
    held = {digest for path in old for _, digest in chunk_index(path, device_key)}
    index = chunk_index(new, device_key)
    return sum(length for length, digest in index if digest not in held), sum(length for length, _ in index)
