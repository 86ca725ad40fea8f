"""`bankctl stage URL`: stage a bank file from an HTTP(S) server, resumably, fetching only what the device
does not hold already.

The manifest comes first (one range request for the archive headers), and is checked like a local
bank's: signature, floor, architecture, room. The chunk index and hash tree follow (one request); the
squashfs is then written into `overlay/.download-<id>` on the banks partition, chunk by chunk in the
order of the signed chunk index: a chunk some installed image already holds (its index is kept beside
it) is copied from there, the others are fetched by range over the same kept-alive connection, runs of
them in one request, and two runs whose gap is at most `gap` bytes in one request too (the gap's chunks
come over the network: one request fewer is worth more than those bytes; see GAP). Every chunk is checked
against its signed sha256 before it is written, the whole file against the manifest's at the end.

A server without byte ranges is read as one stream from its start, all members in file order, each
checked against the manifest: when that costs at most twice what is still missing (a first download,
say); otherwise (an interrupted download it would send again whole) the stage stops and says so, unless
`whole_file`. A file replaced on the server mid-download starts the stage again with the new file (at
most MAX_RESTARTS times). The download directory survives a cut link, a Ctrl-C or a power cut: the next
`stage URL` of the same image checks what is there chunk by chunk and goes on after it. It is never an
image until it is complete and verified (then it is renamed into place like any staged image); staging
another image removes it, and a download that failed for good before it verified a byte leaves nothing."""

from __future__ import annotations

import os

from overlay_layout import chunks, durable, hashing
from overlay_layout.bankfile import HEADER, BankFile, Source
from overlay_layout.layout import DEFAULT_TRIES, DOWNLOAD, SQUASHFS, VERITY, LayoutError
from overlay_layout.net.errors import FileChanged, NetError, RangesRefused
from overlay_layout.net.transport import RemoteFile, Settings
from overlay_layout.stage import StageError, stage_from

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from overlay_layout.records import Manifest
    from overlay_layout.stage import Decrypt
    from overlay_layout.state import Banks
    from overlay_layout.trust import Policy

READ_AHEAD = 64 << 10  # the first request: the archive headers and the manifest in one go
RUN = 8 << 20  # at most this many bytes in one range request
# Two runs of missing chunks closer than this are fetched in one range, the chunks between them included.
# A request more costs a round trip: worth RTT x rate bytes (75-200 KB on 3G, LTE and DSL links). Measured
# with a one-package delta (`bankboot bench-net`, docs/lifecycle.md): 64 KiB was the fastest or within 1%
# of it on links of 150 ms/0.5 MB/s and 50 ms/2 MB/s, and 10% faster than none at 20 ms/10 MB/s, for 2%
# more bytes; 256 KiB and more won only on the fast link and cost 15-80% more bytes.
GAP = 64 << 10
SYNC_EVERY = 1 << 20  # fsync the partial squashfs this often: a power cut loses at most this much
MAX_RESTARTS = 3  # a file that keeps changing on the server
WHOLE_FACTOR = 2  # a server without ranges: stream the whole file when that costs at most this times more
WHOLE_SLACK = 1 << 20  # ... or at most this much more
# An http stage of an image this big loads the TLS piece too, for OpenSSL's SHA-256: on qemu-aarch64 loading
# it costs 0.4 s and Python's own SHA-256 0.02 s per MB more (`bankboot bench-net`).
FAST_HASH_FROM = 24 << 20


class Downloaded(Exception):
    """A download_only stage is complete (not an error: it stops the staging sequence before the image is
    made, and stage_url returns)."""

    def __init__(self, manifest: Manifest) -> None:
        super().__init__("downloaded")
        self.manifest = manifest


class DownloadError(StageError):
    """A stage URL that failed on the way. `transient`: a retry may help (the same command resumes)."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class RemoteSource(Source):
    """A bank file's bytes from a RemoteFile: the first READ_AHEAD bytes come in one request and are kept."""

    def __init__(self, remote: RemoteFile) -> None:
        self.remote = remote
        self.head = b""

    def pread(self, size: int, offset: int) -> bytes:
        if not self.head:
            self.head = self.remote.read_upto(0, READ_AHEAD)
        if offset + size <= len(self.head):
            return self.head[offset:offset + size]
        return self.remote.read_upto(offset, size)

    def size(self) -> int:
        if self.remote.size is None:
            self.pread(1, 0)
        return self.remote.size or 0


class Stats:
    def __init__(self) -> None:
        self.network = 0  # bytes of the image fetched from the server
        self.local = 0  # bytes taken from images already on the device
        self.resumed = 0  # bytes already downloaded by an earlier attempt
        self.gap = 0  # of `network`: chunks the device held, fetched to save a request
        self.received = 0  # everything that came over the network: headers, manifest, index, hash tree too
        self.requests = 0
        self.connections = 0
        self.downloaded = False  # download_only: complete in .download-<id>, not staged

    def add_transport(self, remote: RemoteFile) -> None:
        self.received += remote.received
        self.requests += remote.requests
        self.connections += remote.connections

    def line(self, manifest: Manifest | None = None) -> str:
        """What the stage fetched, for the person; an encrypted bank's decryption (`manifest["_fetched"]`,
        stage.py) says where its squashfs's bytes came from instead."""
        total = max(self.network + self.local + self.resumed, 1)
        where = manifest.get("_fetched") if manifest is not None else None
        return (where or f"{self.network / 1e6:.1f} MB from the network ({100 * self.network / total:.0f}%), "
                         f"{self.local / 1e6:.1f} MB from images on this device, {self.resumed / 1e6:.1f} MB "
                         f"already downloaded by an earlier attempt") + \
            (f"; {self.received / 1e6:.1f} MB received in all, in {self.requests} requests on {self.connections} "
             f"connection{'s' if self.connections != 1 else ''}")


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


class _Writer:
    """Appends verified bytes to the partial squashfs, fsyncing every SYNC_EVERY; hashing them into `h`
    when the whole-file hash is what checks them (no chunk index)."""

    def __init__(self, path: str, prefix: int, h: Any, progress: Callable[[int, int], None] | None,
                 total: int) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.ftruncate(self.fd, prefix)
        os.lseek(self.fd, prefix, os.SEEK_SET)
        self.pos, self.synced, self.h = prefix, prefix, h
        self.progress, self.total = progress, total

    def write(self, data: bytes | memoryview) -> None:
        durable.write_all(self.fd, data)
        if self.h is not None:
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
    match it; without, all of it (hashed into `h`: the whole-file hash at the end decides). Returns
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
            if len(data) != length or hashing.sha256(data).digest() != digest:
                return pos, n
            pos += length
        return pos, len(index)
    finally:
        os.close(fd)


class Download:
    """One attempt at the bytes of one bank file (the caller restarts it when the file changes). `announce`
    is told, before the squashfs is filled, how many of its bytes will come from the network, from images on
    this device and from an earlier attempt (exact, unless a local copy of a chunk turns out damaged)."""

    def __init__(self, remote: RemoteFile, stats: Stats, progress: Callable[[int, int], None] | None,
                 whole_file: bool, gap: int, announce: Callable[[int, int, int], None] | None = None) -> None:
        self.remote, self.stats, self.progress = remote, stats, progress
        self.whole_file, self.gap, self.announce = whole_file, gap, announce

    def fill(self, bank: BankFile, work: str, have: dict[bytes, tuple[str, int, int]]) -> None:
        if bank.manifest["size"] >= FAST_HASH_FROM and not hashing.accelerated():
            _prefer_openssl(self.remote.settings)
        small = [n for n in (VERITY, chunks.MEMBER) if n in bank.members and not _complete(bank, work, n)]
        if self.remote.ranges is False:
            self._check_stream_cost(bank, work, small)
            self.squashfs(bank, work, {})  # one pass in file order: the squashfs, then the small members
            self.small_members(bank, work, small)
        else:
            self.small_members(bank, work, small)
            self.squashfs(bank, work, have)

    def _check_stream_cost(self, bank: BankFile, work: str, small: list[str]) -> None:
        """A server without ranges sends everything from its stream's position on: go on only when that is
        not much more than what this stage still needs (see the module's docstring)."""
        sq = bank.members[SQUASHFS]
        part = os.path.join(work, SQUASHFS + ".part")
        have = os.path.getsize(part) if os.path.exists(part) else 0
        missing = sq.size - min(have, sq.size) + sum(bank.members[n].size for n in small)
        cost = self.remote.cost_from(sq.offset + min(have, sq.size))
        if self.whole_file or cost <= max(WHOLE_FACTOR * missing, missing + WHOLE_SLACK):
            return
        raise RangesRefused(f"{bank.path}: the server does not do byte ranges (it {self.remote.refusal}): this "
                            f"stage needs {missing / 1e6:.1f} MB more, but the server can only send the whole file "
                            f"again ({cost / 1e6:.1f} MB); --whole-file downloads all of it, or serve the file from "
                            f"a server that does ranges")

    def small_members(self, bank: BankFile, work: str, names: list[str]) -> None:
        """The hash tree and the chunk index, with their headers, in one request; each checked."""
        if not names:
            return
        members = [bank.members[n] for n in names]
        start, end = members[0].offset - HEADER, members[-1].offset + members[-1].size
        data = self.remote.read(start, end - start)
        for m in members:
            bank.check_header(m, data[m.offset - HEADER - start:m.offset - start])
            body = data[m.offset - start:m.offset - start + m.size]
            if hashing.sha256(body).hexdigest() != bank.expected(m.name):
                raise StageError(f"{bank.path}: {m.name} does not match the signed manifest (a damaged or changed "
                                 f"file on the server)")
            durable.write_file(os.path.join(work, m.name), body)

    def squashfs(self, bank: BankFile, work: str, have: dict[bytes, tuple[str, int, int]]) -> None:
        manifest = bank.manifest
        final, part = os.path.join(work, SQUASHFS), os.path.join(work, SQUASHFS + ".part")
        size, member = manifest["size"], bank.members[SQUASHFS]
        if os.path.exists(final):
            os.replace(final, part)  # verified before; checked again below like any partial file
        index = chunks.read(os.path.join(work, chunks.MEMBER)) if "chunks" in manifest else None
        if self.remote.ranges is False:
            index = None  # one stream: the whole-file hash decides (the index comes after the squashfs)
        if index is not None and sum(n for n, _ in index) != size:
            raise StageError(f"{bank.path}: its chunk index does not add up to the squashfs's {size} bytes")
        # With an index every byte is checked chunk by chunk against it (it is covered by the signed manifest
        # like the whole-file hash is), so the whole-file hash would only hash everything twice.
        h = hashing.sha256() if index is None else None
        prefix, first = _verified_prefix(part, index, h)
        self.stats.resumed = prefix
        if prefix:
            self.remote.say(f"resuming: {prefix / 1e6:.1f} MB of {size / 1e6:.1f} MB already here and checked")
        if self.announce is not None:
            fetch = size - prefix if index is None else self._planned(index, first, have)
            self.announce(fetch, size - prefix - fetch, prefix)
        out = _Writer(part, prefix, h, self.progress, size)
        try:
            if index is None:
                before = out.pos
                try:
                    self.remote.stream_to(member.offset + prefix, size - prefix, out.write)
                finally:
                    self.stats.network += out.pos - before
            else:
                self._fill_chunks(index, first, prefix, member.offset, have, out, bank.path)
        finally:
            out.close()
        if out.pos != size or (h is not None and h.hexdigest() != manifest["sha256"]):
            os.unlink(part)
            raise StageError(f"{bank.path}: the downloaded squashfs does not match the signed manifest (removed; "
                             f"the server's file is damaged or was changed after signing)")
        os.replace(part, final)
        durable.fsync_dir(work)

    def _fill_chunks(self, index: list[tuple[int, bytes]], first: int, pos: int, base: int,
                     have: dict[bytes, tuple[str, int, int]], out: _Writer, where: str) -> None:
        i = first
        while i < len(index):
            length, digest = index[i]
            local = have.get(digest)
            data = chunks.read_chunk(local, digest) if local else None
            if data is not None:
                out.write(data)
                self.stats.local += length
                pos += length
                i += 1
                continue
            j, size = self._run(index, i, have)
            run = _Run(index, i, j, pos, out, where, have)
            try:
                self.remote.stream_to(base + pos, size, run.take)
            finally:
                self.stats.network += run.done
            self.stats.gap += run.held
            pos += size
            i = j

    def _planned(self, index: list[tuple[int, bytes]], i: int, have: dict[bytes, tuple[str, int, int]]) -> int:
        """The bytes _fill_chunks will fetch from chunk i on, when every local copy reads back good."""
        fetch = 0
        while i < len(index):
            if index[i][1] in have:
                i += 1
                continue
            i, size = self._run(index, i, have)
            fetch += size
        return fetch

    def _run(self, index: list[tuple[int, bytes]], i: int, have: dict[bytes, tuple[str, int, int]]) -> tuple[int, int]:
        """The chunks fetched in one request from chunk i (which is missing): (end, bytes). Missing chunks
        after it join, and so do held ones between two missing ones when there are at most `gap` bytes
        of them and the request stays under RUN."""
        j, size = i + 1, index[i][0]
        while j < len(index):
            if index[j][1] not in have:
                if size + index[j][0] > RUN:
                    break
                size += index[j][0]
                j += 1
                continue
            k, held = j, 0
            while k < len(index) and index[k][1] in have and held <= self.gap:
                held += index[k][0]
                k += 1
            if k == len(index) or held > self.gap or size + held + index[k][0] > RUN:
                break
            size += held
            j = k
        return j, size


class _Run:
    """Bytes of a run of fetched chunks arrive in blocks; each whole chunk is checked, then written."""

    def __init__(self, index: list[tuple[int, bytes]], first: int, end: int, at: int, out: _Writer,
                 where: str, have: dict[bytes, tuple[str, int, int]]) -> None:
        self.index, self.k, self.end, self.at, self.out, self.where = index, first, end, at, out, where
        self.have = have
        self.pending = bytearray()
        self.done = 0  # bytes of whole chunks written
        self.held = 0  # of them, chunks a local image holds (fetched to save a request)

    def take(self, block: memoryview) -> None:
        self.pending.extend(block)
        view, pos = memoryview(self.pending), 0
        try:
            while self.k < self.end and len(view) - pos >= self.index[self.k][0]:
                size, want = self.index[self.k]
                with view[pos:pos + size] as piece:
                    if hashing.sha256(piece).digest() != want:
                        raise StageError(f"{self.where}: the chunk at byte {self.at + self.done} does not match the "
                                         f"signed chunk index (a damaged or changed file on the server); what was "
                                         f"verified is kept")
                    self.out.write(piece)
                pos += size
                self.done += size
                if want in self.have:
                    self.held += size
                self.k += 1
        finally:
            view.release()
        del self.pending[:pos]


def _prefer_openssl(settings: Settings) -> None:
    """Hash with OpenSSL (the TLS piece) where it can be had; Python's own SHA-256 where not."""
    from overlay_layout.net.tls import ensure_ssl

    try:
        ensure_ssl(settings.tls.load)
    except (NetError, OSError):
        pass


def _complete(bank: BankFile, work: str, name: str) -> bool:
    """A small member an earlier attempt already fetched and checked."""
    try:
        with open(os.path.join(work, name), "rb") as f:
            return bool(hashing.sha256(f.read()).hexdigest() == bank.expected(name))
    except OSError:
        return False


def stage_url(banks: Banks, url: str, policy: Policy, running_version: str, tries: int = DEFAULT_TRIES,
              upper: str = "copy", machine: str | None = None, progress: Callable[[int, int], None] | None = None,
              allow_downgrade: bool = False, booted: str | None = None, settings: Settings | None = None,
              whole_file: bool = False, gap: int = GAP, expect: Callable[[BankFile], None] | None = None,
              announce: Callable[[int, int, int], None] | None = None,
              download_only: bool = False, opener: Callable[[RemoteFile], Any] | None = None,
              restarts: int = MAX_RESTARTS) -> tuple[Manifest, Stats]:
    """Stage the bank file at `url` (see the module's docstring). The caller holds the banks lock.
    `expect`: called with the bank once its manifest is read, before anything is written (it raises
    StageError for a bank that is not the one wanted: a channel document's). `announce`: see Download.
    `download_only`: stop once the download is complete and verified; it stays in `.download-<id>` (never
    an image, never booted) until `bankctl apply` stages it (downloaded.py), and `stats.downloaded` says so.
    `opener`: where in the remote file the bank is (a transport.Window of it: a bank inside a .swu); it may
    raise NetError or StageError. `restarts`: how often a file replaced on the server starts it again."""
    settings = settings or Settings()
    stats = Stats()
    for attempt in range(restarts + 1):
        try:
            remote = RemoteFile(url, settings)
        except NetError as e:
            raise DownloadError(str(e), e.transient) from e
        try:
            view = remote
            if opener is not None:
                try:
                    view = opener(remote)
                except FileChanged:
                    raise
                except NetError as e:
                    raise _failed(e, remote, None) from e
            manifest = _attempt(banks, view, Download(view, stats, progress, whole_file, gap, announce), policy,
                                running_version, {"tries": tries, "upper": upper, "machine": machine,
                                                  "allow_downgrade": allow_downgrade, "booted": booted,
                                                  "progress": progress},  # an encrypted bank's, as it decrypts
                                expect, download_only)
        except Downloaded as done:
            stats.downloaded = True
            return done.manifest, stats  # after the `finally` below
        except FileChanged as e:
            if attempt == restarts:
                raise DownloadError(f"{e}; it changed {attempt + 1} times: try again once the server's file is "
                                    f"complete", True) from e
            settings.say(f"{e}: starting again with the file as it is now")
            stats.network = stats.local = stats.gap = stats.resumed = 0
            continue
        finally:
            remote.close()
            stats.add_transport(remote)
        return manifest, stats
    raise AssertionError("unreachable")


def _attempt(banks: Banks, remote: RemoteFile, download: Download, policy: Policy, running_version: str,
             options: dict[str, Any], expect: Callable[[BankFile], None] | None = None,
             download_only: bool = False) -> Manifest:
    """One pass of the stage over `remote`; NetErrors become DownloadErrors, except FileChanged."""
    lay = banks.layout
    held: dict[str, str] = {}

    def open_bank() -> BankFile:
        try:
            bank = BankFile(remote.url.display, RemoteSource(remote), derive=True)
        except FileChanged:
            raise
        except NetError as e:
            raise _failed(e, remote, None) from e
        if expect is not None:
            try:
                expect(bank)
            except NetError as e:
                raise _failed(e, remote, None) from e
        return bank

    def fill(bank: BankFile, work: str, decrypt: Decrypt | None) -> None:
        """The bank's files into `work`: downloaded (resumed, deltas), or decrypted as they are fetched (an
        encrypted bank, overlay_layout/encryption.py: resumed and deltas too); then kept for `apply`
        (download_only) or staged."""
        image = bank.manifest["id"]
        held["work"] = work
        for name in os.listdir(lay.overlay):  # one download at a time: an older one only takes room
            if name.startswith(DOWNLOAD) and name != DOWNLOAD + image:
                durable.remove_tree(os.path.join(lay.overlay, name))
        try:
            if decrypt is not None:
                decrypt(work)
            else:
                download.fill(bank, work, local_chunks(banks))
        except FileChanged:
            raise
        except NetError as e:
            raise _failed(e, remote, work) from e
        except LayoutError as e:
            raise StageError(str(e)) from e
        from overlay_layout.net import downloaded

        if download_only:
            assert isinstance(bank.source, RemoteSource)
            downloaded.keep(work, bank, bank.source.head, remote)
            raise Downloaded(bank.manifest)
        downloaded.forget(work)

    try:
        return stage_from(banks, remote.url.display, open_bank, fill, policy, running_version, resumable=True,
                          **options)
    except StageError as e:
        if not e.transient and "work" in held:
            _drop_if_empty(held["work"])
        raise


def _failed(e: NetError, remote: RemoteFile, work: str | None) -> DownloadError:
    received = f"{remote.received / 1e6:.1f} MB received"
    if e.transient and work is not None:
        return DownloadError(f"{e}; {received}, what was verified is kept: the same `bankctl stage` of this URL "
                             f"resumes", True)
    return DownloadError(f"{e}" if work is None else f"{e} ({received})", e.transient)


def _drop_if_empty(work: str) -> None:
    """A download that failed for good and verified nothing leaves nothing behind."""
    part = os.path.join(work, SQUASHFS + ".part")
    if os.path.isdir(work) and not (os.path.exists(part) and os.path.getsize(part)) and \
            not os.path.exists(os.path.join(work, SQUASHFS)):
        durable.remove_tree(work)
        durable.fsync_dir(os.path.dirname(work))
