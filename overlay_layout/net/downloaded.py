"""A complete download kept for later: `bankctl poll --download-only` stops once a bank's squashfs, hash
tree and chunk index are in `overlay/.download-<id>` and verified, and `bankctl apply` (in a maintenance
window, with or without a network) makes that download the `next` image on trial.

Beside the download's files go the bank file's first bytes as the server sent them (`bank.head`: its
archive headers and signed manifest) and a note of where it came from (`download.json`). `apply` reads the
bank from those exactly as `stage URL` reads it from the server (overlay_layout/bankfile.py), so every
check of a stage runs again (signature, floor, architecture, room), checks each file against the
manifest, and goes through the one staging sequence (stage.stage_from). Until then the download is not an
image: not `next`, not listed, ignored at boot; staging another image or `bankctl gc` removes it."""

from __future__ import annotations

import os

from overlay_layout import durable, hashing, jsontext
from overlay_layout.bankfile import BankFile, BankFileError, Source
from overlay_layout.layout import DEFAULT_TRIES, DOWNLOAD, SQUASHFS
from overlay_layout.stage import StageError, stage_from

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from overlay_layout.net.transport import RemoteFile
    from overlay_layout.records import Manifest
    from overlay_layout.stage import Decrypt
    from overlay_layout.state import Banks
    from overlay_layout.trust import Policy

HEAD = "bank.head"
NOTE = "download.json"


def keep(work: str, bank: BankFile, head: bytes, remote: RemoteFile) -> None:
    """Mark the complete download in `work` as one `apply` can stage (the bank's first bytes, its origin)."""
    durable.write_file(os.path.join(work, HEAD), head)
    note = {"url": remote.url.display, "size": remote.size, "image": bank.manifest["id"],
            "version": bank.manifest["version"]}
    durable.write_file(os.path.join(work, NOTE), jsontext.dumps(note).encode() + b"\n")


def forget(work: str) -> None:
    """The download is being staged now (`stage URL` or `poll`): its marks are not part of the image."""
    for name in (HEAD, NOTE):
        if os.path.exists(os.path.join(work, name)):
            durable.remove(os.path.join(work, name))


def find(banks: Banks) -> dict[str, Any] | None:
    """The complete download waiting for `apply` (there is at most one: a stage removes older downloads):
    its note with `dir` added, or None."""
    overlay = banks.layout.overlay
    for name in sorted(os.listdir(overlay)) if os.path.isdir(overlay) else []:
        work = os.path.join(overlay, name)
        if not name.startswith(DOWNLOAD) or not os.path.isfile(os.path.join(work, SQUASHFS)):
            continue
        try:
            with open(os.path.join(work, NOTE), "rb") as f:
                note = jsontext.loads(f.read(4096))
        except (OSError, ValueError):
            continue
        if isinstance(note, dict) and note.get("image") == name[len(DOWNLOAD):] and isinstance(note.get("size"), int):
            return {**note, "dir": work}
    return None


class _Head(Source):
    """The bank file's first bytes, kept: all a BankFile reads of it (the archive headers, the manifest)."""

    def __init__(self, head: bytes, size: int) -> None:
        self.head, self.total = head, size

    def pread(self, size: int, offset: int) -> bytes:
        if offset + size > len(self.head) and offset < self.total:
            raise BankFileError(f"the kept start of the bank ends at byte {len(self.head)}; byte {offset} is not in it")
        return self.head[offset:offset + size]

    def size(self) -> int:
        return self.total


def apply(banks: Banks, policy: Policy, running_version: str, tries: int = DEFAULT_TRIES, upper: str = "copy",
          booted: str | None = None, machine: str | None = None) -> Manifest:
    """Stage the complete download (see the module's docstring); StageError when there is none or it does not
    match its manifest. The caller holds the banks lock."""
    note = find(banks)
    if note is None:
        raise StageError("no complete download to apply (bankctl poll --download-only makes one)")
    work, where = str(note["dir"]), f"{note['url']} (downloaded)"
    try:
        with open(os.path.join(work, HEAD), "rb") as f:
            head = f.read(1 << 20)
    except OSError as e:
        raise StageError(f"{work}: cannot read {HEAD}: {e.strerror}") from e

    def open_bank() -> BankFile:
        bank = BankFile(where, _Head(head, note["size"]), derive=True)
        if bank.manifest["id"] != note["image"]:
            raise StageError(f"{work} holds the start of image {bank.manifest['id']}'s bank, not {note['image']}'s")
        return bank

    def check(bank: BankFile, into: str, decrypt: Decrypt | None) -> None:
        # the download holds plain files (an encrypted bank's decrypted as it came): checked, never decrypted
        for member in bank.payload():
            path = os.path.join(into, member.name)
            try:
                got = hashing.hash_file(path)
            except OSError as e:
                raise StageError(f"{where}: {member.name}: {e.strerror or e}; download it again (bankctl poll)") \
                    from e
            if got != (bank.expected_size(member.name), bank.expected(member.name)):
                raise StageError(f"{where}: {member.name} on the banks partition does not match the signed manifest "
                                 f"(damaged since it was downloaded); download it again (bankctl poll)")
        forget(into)

    return stage_from(banks, where, open_bank, check, policy, running_version, tries, upper, machine,
                      booted=booted, resumable=True)
