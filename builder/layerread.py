"""Reading one tar stream of an image (an OCI layer blob, or a plain rootfs tarball) as its members, with
memory that does not grow with its size: compressed streams go through the real decompressors (gzip, zstd,
xz, bzip2 as child processes, fed from a thread), and what comes out is read member by member by tarfile's
stream mode.

Everything a damaged or cut-short source could hide is checked here, because tarfile alone would not
notice: the stored blob's sha256 (`digest`) and the uncompressed tar's (`diff_id`, the OCI config's) when
the source names them, the decompressor's exit status (a truncated gzip or zstd stream), and, when there is
no digest to prove the end, the tar's end-of-archive block (tarfile ends quietly on a truncated or garbled
header)."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from builder.errors import BuildError
from builder.run import find_tool

BLOCK = 512
READ_SIZE = 1 << 20
WINDOW = 64 << 10  # decompressed bytes kept for the end-of-archive check (tarfile reads 10 KiB ahead)
# The first bytes of each compressed format, and the tool that undoes it (Debian package).
MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ\x00": "xz", b"BZh": "bzip2"}
DECOMPRESSORS = {"gzip": ("gzip", "gzip"), "zstd": ("zstd", "zstd"), "xz": ("xz", "xz-utils"),
                 "bzip2": ("bzip2", "bzip2")}


class LayerError(BuildError, ValueError):
    pass


@dataclass(frozen=True)
class Layer:
    """One tar stream of an image, bottom layer first."""

    path: Path
    what: str  # how messages name it: "layer 2 of 3 (sha256:1234abcd…) of oci:img"
    compression: str = "auto"  # gzip, zstd, xz, bzip2, none, or auto (from its first bytes)
    digest: str | None = None  # "sha256:<hex>" of the stored blob
    diff_id: str | None = None  # "sha256:<hex>" of the uncompressed tar
    whiteouts: bool = True  # OCI whiteout files apply (not in a plain tarball, where .wh.* are just files)


def detect_compression(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise LayerError(f"cannot read {path}: {e.strerror}") from None
    return next((name for magic, name in MAGIC.items() if head.startswith(magic)), "none")


def _check_digest(what: str, kind: str, expected: str | None, h: hashlib._Hash) -> None:
    if expected is None:
        return
    algo, _, want = expected.partition(":")
    if algo != "sha256":
        raise LayerError(f"{what}: {kind} {expected} uses {algo!r}; bankboot checks sha256 digests only")
    if h.hexdigest() != want:
        raise LayerError(f"{what}: its content does not match its {kind} (sha256:{h.hexdigest()[:16]}…, expected "
                         f"{expected[:23]}…): the image is damaged or was changed; fetch or build it again")


class _Counted:
    """The decompressed tar stream: counts it, hashes it (diff_id) and keeps its last WINDOW bytes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.pos, self.hash = raw, 0, hashlib.sha256()
        self.window = bytearray()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(READ_SIZE if n is None or n < 0 else n)
        self.pos += len(data)
        self.hash.update(data)
        self.window += data
        if len(self.window) > WINDOW:
            del self.window[:len(self.window) - WINDOW]
        return data

    def zero_from(self, offset: int) -> bool | None:
        """Whether every byte read from `offset` on is zero (None: that offset left the window)."""
        start = len(self.window) - (self.pos - offset)
        if start < 0:
            return None
        return not any(self.window[start:])


class _Feeder(threading.Thread):
    """Copies the blob into the decompressor, hashing what it reads (the blob's digest)."""

    def __init__(self, path: Path, sink: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.path, self.sink, self.hash = path, sink, hashlib.sha256()
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            with open(self.path, "rb") as f:
                while chunk := f.read(READ_SIZE):
                    self.hash.update(chunk)
                    self.sink.write(chunk)
        except (OSError, ValueError) as e:  # BrokenPipe: the decompressor stopped (its status says why)
            self.error = e
        finally:
            try:
                self.sink.close()
            except OSError:
                pass


class _Hashed:
    """An uncompressed blob read straight from its file, hashed as it goes."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "rb")  # closed by LayerReader.close
        self.hash = hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        self.hash.update(data)
        return data


class LayerReader:
    """`with LayerReader(layer) as r: for member, data in r: ...`; leaving the block without an error checks
    that the whole stream was sound (digests, decompressor, end of archive)."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        if not layer.path.is_file():
            raise LayerError(f"{layer.what}: {layer.path} does not exist")
        self.compression = detect_compression(layer.path) if layer.compression == "auto" else layer.compression
        self.proc: subprocess.Popen | None = None
        self.feeder: _Feeder | None = None
        self.hashed: _Hashed | None = None
        if self.compression == "none":
            self.hashed = _Hashed(layer.path)
            raw: IO[bytes] = self.hashed  # type: ignore[assignment]
        elif self.compression in DECOMPRESSORS:
            tool, package = DECOMPRESSORS[self.compression]
            self.proc = subprocess.Popen([find_tool(tool, package, LayerError), "-dcq"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.feeder = _Feeder(layer.path, self.proc.stdin)
            raw = self.proc.stdout
        else:
            raise LayerError(f"{layer.what}: compression {self.compression!r} is not one bankboot reads "
                             f"(gzip, zstd, xz, bzip2 or none)")
        self.stream = _Counted(raw)
        try:
            self.tar = tarfile.open(fileobj=self.stream, mode="r|", copybufsize=READ_SIZE)  # type: ignore[call-overload]
        except tarfile.TarError as e:
            error = self._error(f"not a tar archive ({e})")
            self.close()
            raise error from None

    def __enter__(self) -> LayerReader:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            if kind is None:
                self.finish()
        finally:
            self.close()

    def __iter__(self) -> Iterator[tuple[tarfile.TarInfo, BinaryIO | None]]:
        """(member, its data: readable once, before the next member)."""
        while True:
            try:
                member = self.tar.next()
            except (tarfile.TarError, EOFError, OSError) as e:
                raise self._error(f"unreadable at byte {self.stream.pos} of the tar ({e})") from None
            if member is None:
                return
            yield member, (self.tar.extractfile(member) if member.isreg() else None)

    def read_data(self, data: BinaryIO, size: int) -> Iterator[bytes]:
        """A member's data in pieces, with a clear error when the stream ends inside it."""
        left = size
        while left:
            try:
                piece = data.read(min(left, READ_SIZE))
            except (tarfile.TarError, EOFError, OSError) as e:
                raise self._error(f"cut short inside a file ({e})") from None
            if not piece:
                raise self._error("cut short inside a file")
            left -= len(piece)
            yield piece

    def finish(self) -> None:
        """Read what follows the last member and check the stream: padding only, the end-of-archive block
        when nothing else proves the end, the decompressor's status, the digests."""
        end = self.tar.offset  # where the next header would start
        while True:
            more = self.stream.read(READ_SIZE)
            if not more:
                break
            if any(more):
                raise LayerError(f"{self.layer.what}: data after the end of the archive (an unreadable header "
                                 f"near byte {end}): the file is damaged")
        clean = self.stream.zero_from(end)
        if clean is False:
            raise LayerError(f"{self.layer.what}: an unreadable header at byte {end} of the tar: the file is damaged "
                             f"or cut short")
        if self.proc is not None:
            assert self.feeder is not None
            self.feeder.join()
            status = self.proc.wait()
            if status != 0:
                raise LayerError(f"{self.layer.what}: the {self.compression} stream is damaged or cut short"
                                 f"{self._tool_said()}")
        if self.layer.digest is None and self.stream.pos < end + BLOCK:
            raise LayerError(f"{self.layer.what}: cut short: the tar has no end-of-archive block after byte {end}")
        blob_hash = self.hashed.hash if self.hashed else self.feeder.hash if self.feeder else None
        if blob_hash is not None:
            _check_digest(self.layer.what, "digest", self.layer.digest, blob_hash)
        _check_digest(self.layer.what, "diff_id", self.layer.diff_id, self.stream.hash)

    def _error(self, what: str) -> LayerError:
        """The error for a stream that ended wrong: the decompressor's own, when it failed (the stream has
        ended, so it is exiting), else `what`."""
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        said = self._tool_said()
        if said:
            return LayerError(f"{self.layer.what}: the {self.compression} stream is damaged or cut short{said}")
        return LayerError(f"{self.layer.what}: {what}")

    def _tool_said(self) -> str:
        if self.proc is None or self.proc.poll() is None or self.proc.returncode == 0:
            return ""
        assert self.proc.stderr is not None
        said = self.proc.stderr.read().decode(errors="replace").strip()
        return f" ({said[-300:]})" if said else ""

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdout, self.proc.stderr):
                if f is not None:
                    f.close()
        if self.feeder is not None:
            self.feeder.join()
        if self.hashed is not None:
            self.hashed.f.close()
