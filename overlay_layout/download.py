"""`bankctl stage URL`: stage a bank file from an HTTP server, resumably, fetching only what the device does
not hold already.

The manifest comes first (a range request), and is checked like a local bank's: signature, floor,
architecture, room. The squashfs is then written into `overlay/.download-<id>` on the banks partition,
chunk by chunk in the order of the signed chunk index: a chunk some installed image already holds (its
index is kept beside it) is copied from there, the others are fetched from the server by range, runs of
them in one request; every chunk is checked against its signed sha256 before it is written, and the whole
file against the manifest's at the end. The download directory survives a cut link, a Ctrl-C or a power
cut: the next `stage URL` of the same image checks what is there chunk by chunk and goes on after it. It is
never an image until it is complete and verified (then it is renamed into place like any staged image);
staging another image removes it."""

from __future__ import annotations

import hashlib
import os

from overlay_layout import chunks, durable
from overlay_layout.bankfile import BankFile, Source
from overlay_layout.http import FetchError, HttpFile
from overlay_layout.layout import SQUASHFS, VERITY
from overlay_layout.stage import StageError, stage_from

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from overlay_layout.records import Manifest
    from overlay_layout.state import Banks
    from overlay_layout.trust import Policy

PREFIX = ".download-"
READ_AHEAD = 64 << 10  # the first request: the archive headers and the manifest in one go
RUN = 8 << 20  # at most this many missing bytes in one range request
SYNC_EVERY = 1 << 20  # fsync the partial squashfs this often: a power cut loses at most this much


class HttpSource(Source):
    def __init__(self, http: HttpFile) -> None:
        self.http = http
        self.head = b""

    def pread(self, size: int, offset: int) -> bytes:
        if not self.head:
            self.head = self.http.read_upto(0, READ_AHEAD)
        if offset + size <= len(self.head):
            return self.head[offset:offset + size]
        return self.http.read_upto(offset, size)

    def size(self) -> int:
        if self.http.size is None:
            self.pread(1, 0)
        return self.http.size or 0


class Stats:
    def __init__(self) -> None:
        self.network = 0  # bytes of the image fetched from the server
        self.local = 0  # bytes taken from images already on the device
        self.resumed = 0  # bytes already downloaded by an earlier attempt
        self.received = 0  # everything that came over the network: headers, manifest, index, hash tree too

    def line(self) -> str:
        total = max(self.network + self.local + self.resumed, 1)
        return (f"{self.network / 1e6:.1f} MB from the network ({100 * self.network / total:.0f}%), "
                f"{self.local / 1e6:.1f} MB from images on this device, {self.resumed / 1e6:.1f} MB already "
                f"downloaded by an earlier attempt; {self.received / 1e6:.1f} MB received in all")


def local_chunks(banks: Banks) -> dict[bytes, tuple[str, int, int]]:
    """Every chunk the installed images hold, by sha256 (images without a stored index give none)."""
    have: dict[bytes, tuple[str, int, int]] = {}
    lay = banks.layout
    for image in lay.images():
        index = chunks.read(os.path.join(lay.image_dir(image), chunks.MEMBER))
        if index is not None:
            for digest, where in chunks.located(index, lay.squashfs(image)).items():
                have.setdefault(digest, where)
    return have


def _small_member(bank: BankFile, http: HttpFile, name: str, work: str) -> None:
    """The hash tree or the chunk index: fetched whole unless a complete copy is there, checked."""
    path = os.path.join(work, name)
    want = bank.expected(name)
    try:
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() == want:
                return
    except OSError:
        pass
    member = bank.members[name]
    data = http.read(member.offset, member.size)
    if hashlib.sha256(data).hexdigest() != want:
        raise StageError(f"{http.url}: {name} does not match the signed manifest (a damaged or changed file on "
                         f"the server)")
    durable.write_file(path, data)


class _Writer:
    """Appends verified bytes to the partial squashfs, hashing them and fsyncing every SYNC_EVERY."""

    def __init__(self, path: str, prefix: int, h: Any, progress: Callable[[int, int], None] | None,
                 total: int) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.ftruncate(self.fd, prefix)
        os.lseek(self.fd, prefix, os.SEEK_SET)
        self.pos, self.synced, self.h = prefix, prefix, h
        self.progress, self.total = progress, total

    def write(self, data: bytes | memoryview) -> None:
        durable.write_all(self.fd, data)
        self.h.update(data)
        self.pos += len(data)
        if self.pos - self.synced >= SYNC_EVERY:
            durable.checkpoint("download a block")
            os.fsync(self.fd)
            self.synced = self.pos
        if self.progress is not None:
            self.progress(self.pos, self.total)

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


def _verified_prefix(path: str, index: list[tuple[int, bytes]] | None, h: Any) -> tuple[int, int]:
    """How much of a partial squashfs an earlier attempt left is good: with an index, the whole chunks that
    match it (hashed into `h`); without, all of it (the whole-file hash at the end decides). Returns
    (bytes, chunks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0, 0
    try:
        if index is None:
            size = os.fstat(fd).st_size
            pos = 0
            while pos < size and (data := os.pread(fd, 4 << 20, pos)):
                h.update(data)
                pos += len(data)
            return pos, 0
        pos = 0
        for n, (length, digest) in enumerate(index):
            data = os.pread(fd, length, pos)
            if len(data) != length or hashlib.sha256(data).digest() != digest:
                return pos, n
            h.update(data)
            pos += length
        return pos, len(index)
    finally:
        os.close(fd)


def download_squashfs(bank: BankFile, http: HttpFile, work: str, have: dict[bytes, tuple[str, int, int]],
                      progress: Callable[[int, int], None] | None, stats: Stats) -> None:
    manifest = bank.manifest
    final, part = os.path.join(work, SQUASHFS), os.path.join(work, SQUASHFS + ".part")
    size, member = manifest["size"], bank.members[SQUASHFS]
    if os.path.exists(final):
        os.replace(final, part)  # verified before; checked again below like any partial file
    index = chunks.read(os.path.join(work, chunks.MEMBER)) if "chunks" in manifest else None
    h = hashlib.sha256()
    prefix, first = _verified_prefix(part, index, h)
    stats.resumed = prefix
    if prefix:
        http.say(f"resuming: {prefix / 1e6:.1f} MB of {size / 1e6:.1f} MB already here and checked")
    out = _Writer(part, prefix, h, progress, size)
    try:
        if index is None:
            http.stream(member.offset + prefix, size - prefix, out.write)
            stats.network += size - prefix
        else:
            _fill_chunks(index, first, prefix, member.offset, http, have, out, stats)
    finally:
        out.close()
    if out.pos != size or h.hexdigest() != manifest["sha256"]:
        os.unlink(part)
        raise StageError(f"{http.url}: the downloaded squashfs does not match the signed manifest (removed; "
                         f"the server's file is damaged or was changed after signing)")
    os.replace(part, final)
    durable.fsync_dir(work)


class _Run:
    """Bytes of a run of fetched chunks arrive in blocks; each whole chunk is checked, then written."""

    def __init__(self, index: list[tuple[int, bytes]], first: int, end: int, at: int, out: _Writer,
                 url: str) -> None:
        self.index, self.k, self.end, self.at, self.out, self.url = index, first, end, at, out, url
        self.pending = bytearray()
        self.done = 0  # bytes of whole chunks written

    def take(self, block: memoryview) -> None:
        self.pending.extend(block)
        while self.k < self.end and len(self.pending) >= self.index[self.k][0]:
            size, want = self.index[self.k]
            piece = bytes(self.pending[:size])
            if hashlib.sha256(piece).digest() != want:
                raise StageError(f"{self.url}: the chunk at byte {self.at + self.done} does not match the signed "
                                 f"chunk index (a damaged or changed file on the server); what was verified is kept")
            self.out.write(piece)
            del self.pending[:size]
            self.done += size
            self.k += 1


def _fill_chunks(index: list[tuple[int, bytes]], first: int, pos: int, base: int, http: HttpFile,
                 have: dict[bytes, tuple[str, int, int]], out: _Writer, stats: Stats) -> None:
    i = first
    while i < len(index):
        length, digest = index[i]
        where = have.get(digest)
        data = chunks.read_chunk(where, digest) if where else None
        if data is not None:
            out.write(data)
            stats.local += length
            pos += length
            i += 1
            continue
        j, size = i + 1, length  # a run to fetch: this chunk and the missing ones after it
        while j < len(index) and index[j][1] not in have and size + index[j][0] <= RUN:
            size += index[j][0]
            j += 1
        run = _Run(index, i, j, pos, out, http.url)
        try:
            http.stream(base + pos, size, run.take)
        finally:
            stats.network += run.done
        pos += size
        i = j


def stage_url(banks: Banks, url: str, policy: Policy, running_version: str, tries: int = 3, upper: str = "copy",
              machine: str | None = None, progress: Callable[[int, int], None] | None = None,
              allow_downgrade: bool = False, booted: str | None = None, timeout: float = 20.0, retries: int = 5,
              say: Callable[[str], None] | None = None) -> tuple[Manifest, Stats]:
    """Stage the bank file at `url` (see the module's docstring). The caller holds the banks lock."""
    try:
        http = HttpFile(url, timeout, retries, say)
    except FetchError as e:
        raise StageError(str(e)) from None
    stats = Stats()
    lay = banks.layout

    def open_bank() -> BankFile:
        try:
            return BankFile(url, HttpSource(http))
        except FetchError as e:
            raise StageError(str(e)) from None

    def fill(bank: BankFile, work: str) -> None:
        image = bank.manifest["id"]
        for name in os.listdir(lay.overlay):  # one download at a time: an older one only takes room
            if name.startswith(PREFIX) and name != PREFIX + image:
                durable.remove_tree(os.path.join(lay.overlay, name))
        try:
            for name in [n for n in (chunks.MEMBER, VERITY) if n in bank.members]:
                _small_member(bank, http, name, work)
            download_squashfs(bank, http, work, local_chunks(banks), progress, stats)
        except FetchError as e:
            raise StageError(f"{e}; {http.received / 1e6:.1f} MB received, what was verified is kept: the same "
                             f"`bankctl stage {url}` resumes") from None

    manifest = stage_from(banks, url, open_bank, fill, policy, running_version, tries, upper, machine,
                          allow_downgrade, booted=booted, work_prefix=PREFIX)
    stats.received = http.received
    return manifest, stats
