"""An image's layers, flattened into the one tar stream that becomes its squashfs (tar2sqfs reads it), the
way a container runtime's overlay would show them: a whiteout (`.wh.NAME`) deletes NAME from the layers
below, an opaque marker (`.wh..wh..opq`) hides everything below in its directory, a file replaces a
directory, and a directory's attributes come from the topmost layer that has it. Ownership, modes, device
nodes, hardlinks and xattrs pass through as the layers carry them: nothing is unpacked on this machine, so
no root is needed and nothing is lost.

Two passes, so memory grows with the number of paths, never with the data: the first reads only the headers
of the layers above the bottom one (what they delete, replace or hide); the second streams every layer
bottom up and writes each entry that survives. Bottom up keeps parents before children and a hardlink after
its target. A hardlink whose target a higher layer replaced still means the old content: that file is read
again from its layer and written under the link's name (rare: it takes a third read of one layer).

Timestamps are clamped to `clamp` (SOURCE_DATE_EPOCH, or the image's creation time), so rebuilding the same
source gives the same bytes, and an unchanged file keeps its time between builds."""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from builder.layerread import READ_SIZE, Layer, LayerError, LayerReader

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
ROOT = ""
# The parts of a PAX header that describe content, kept; atime/ctime and names are left behind (they differ
# between tools and runs and the squashfs has no use for them).
XATTR_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")
# The xattr namespaces squashfs stores; others (system.posix_acl_*: ACLs) cannot be kept and are dropped.
SQUASHFS_XATTRS = ("user.", "trusted.", "security.")

# visit(entry) may return a file that receives the entry's data as it streams (the skeleton keeps some).
Visitor = Callable[[tarfile.TarInfo], BinaryIO | None]


def normalize(name: str, what: str) -> str:
    """A member name as a path relative to the root ("" for the root itself)."""
    parts = []
    for part in name.split("/"):
        if part == "..":
            raise LayerError(f"{what}: member {name!r} points outside the root")
        if part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def ancestors(path: str) -> Iterator[str]:
    """The directories holding `path`, innermost first, ending with the root."""
    while path:
        path = posixpath.dirname(path)
        yield path


@dataclass
class Upper:
    """What the layers do, by path: the highest layer with an entry, with a non-directory, with a whiteout, with
    an opaque marker; and the topmost directory entry (whose attributes win). Layers above the bottom one."""

    entry: dict[str, int] = field(default_factory=dict)
    nondir: dict[str, int] = field(default_factory=dict)
    white: dict[str, int] = field(default_factory=dict)
    opaque: dict[str, int] = field(default_factory=dict)
    dirs: dict[str, tuple[int, tarfile.TarInfo]] = field(default_factory=dict)

    def record(self, path: str, member: tarfile.TarInfo, k: int) -> None:
        self.entry[path] = k
        if member.isdir():
            self.dirs[path] = (k, member)
        else:
            self.nondir[path] = k

    def hidden(self, path: str, k: int, isdir: bool) -> bool:
        """Whether layer k's entry at `path` is deleted, replaced or hidden by a layer above it (a directory
        replaced by a directory is merged, not hidden)."""
        if self.white.get(path, -1) > k or self.nondir.get(path, -1) > k:
            return True
        if not isdir and self.entry.get(path, -1) > k:
            return True
        for a in ancestors(path):
            if self.opaque.get(a, -1) > k or (a and (self.white.get(a, -1) > k or self.nondir.get(a, -1) > k)):
                return True
        return False


def whiteout_target(path: str) -> tuple[str, str] | None:
    """("white", path deleted) or ("opaque", directory) for a whiteout file; None for anything else."""
    base = posixpath.basename(path)
    if not base.startswith(WHITEOUT):
        return None
    parent = posixpath.dirname(path)
    if base == OPAQUE:
        return "opaque", parent
    if base.startswith(WHITEOUT + WHITEOUT):  # .wh..wh.* (AUFS's own bookkeeping): nothing to apply
        return "meta", parent
    return "white", posixpath.join(parent, base[len(WHITEOUT):])


@dataclass
class FlattenStats:
    entries: int = 0
    bytes: int = 0
    newest: int = 0  # the newest timestamp written (after clamping)
    dropped: dict[str, list[str]] = field(default_factory=dict)  # xattr name -> paths it was dropped from


class Flattener:
    def __init__(self, layers: list[Layer], out: IO[bytes], clamp: int | None = None,
                 visit: Visitor | None = None) -> None:
        self.layers, self.clamp, self.visit = layers, clamp, visit
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=READ_SIZE)  # type: ignore[call-overload]
        self.upper = Upper()
        self.emitted: dict[str, str] = {}  # path -> the name its inode was written as (hardlink targets)
        self.regular_at: dict[str, int] = {}  # path -> the highest layer so far with a regular file there
        # Hardlinks to re-read, by (target, the layer holding the target's content then).
        self.pending: dict[tuple[str, int], list[tarfile.TarInfo]] = {}
        self.deferred: dict[str, tuple[str, int]] = {}  # a pending link's path -> its group
        self.stats = FlattenStats()

    # -- pass 1 ------------------------------------------------------------------------------------------
    def scan_upper(self) -> None:
        for k, layer in enumerate(self.layers):
            if k == 0:
                continue
            with LayerReader(layer) as reader:
                for member, _ in reader:
                    path = normalize(member.name, layer.what)
                    wh = whiteout_target(path) if layer.whiteouts else None
                    if wh is None:
                        self.upper.record(path, member, k)
                    elif wh[0] == "white":
                        self.upper.white[wh[1]] = k
                    elif wh[0] == "opaque":
                        self.upper.opaque[wh[1]] = k

    # -- pass 2 ------------------------------------------------------------------------------------------
    def write_layers(self) -> None:
        for k, layer in enumerate(self.layers):
            with LayerReader(layer) as reader:
                for member, data in reader:
                    self._take(reader, layer, k, member, data)
        self._promote()

    def _take(self, reader: LayerReader, layer: Layer, k: int, member: tarfile.TarInfo,
              data: BinaryIO | None) -> None:
        path = normalize(member.name, layer.what)
        if layer.whiteouts and whiteout_target(path) is not None:
            return
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk() or member.ischr()
                or member.isblk() or member.isfifo()):
            raise LayerError(f"{layer.what}: /{path} is a tar member of type {member.type!r}, which a root "
                             f"filesystem cannot hold")
        if member.isreg():
            self.regular_at[path] = k
        if self.upper.hidden(path, k, member.isdir()):
            return
        if member.isdir():
            if path in self.emitted:
                return
            top_k, top = self.upper.dirs.get(path, (k, member))
            self._write(path, top if top_k > k else member, None, reader)
            return
        if path in self.emitted:
            raise LayerError(f"{layer.what}: two entries for /{path} in one layer")
        if member.islnk():
            target = normalize(member.linkname, layer.what)
            if target in self.emitted and target not in self.deferred:
                self._write(path, member, None, reader, link=self.emitted[target])
                return
            # Its target was replaced or deleted above (or is a link waiting for that): the old file is
            # read again from its layer once the layers are written.
            if target not in self.deferred and target not in self.regular_at:
                raise LayerError(f"{layer.what}: hardlink /{path} points at /{target}, which is not a file in "
                                 f"that layer or below")
            group = self.deferred.get(target, (target, self.regular_at.get(target, k)))
            self.pending.setdefault(group, []).append(member)
            self.deferred[path] = group
            self.emitted[path] = path
            return
        self._write(path, member, data, reader)

    def _promote(self) -> None:
        """Hardlinks whose target was replaced or deleted above them: the first becomes a copy of the file
        as it was in its layer, the others link to it."""
        for (target, j), links in self.pending.items():
            first = normalize(links[0].name, "")
            layer = self.layers[j]
            reader = LayerReader(layer)  # closed without the end checks: only the start is read, and pass 2
            try:  # read this layer whole and checked it
                for member, data in reader:
                    if member.isreg() and normalize(member.name, layer.what) == target:
                        del self.deferred[first]
                        self._write(first, member, data, reader)
                        for other in links[1:]:
                            del self.deferred[normalize(other.name, "")]
                            self._write(normalize(other.name, ""), other, None, reader, link=first)
                        break
                else:
                    raise LayerError(f"{layer.what}: /{target} vanished between two reads")
            finally:
                reader.close()
        self.pending = {}

    # -- output ------------------------------------------------------------------------------------------
    def _write(self, path: str, member: tarfile.TarInfo, data: BinaryIO | None, reader: LayerReader,
               link: str | None = None) -> None:
        info = tarfile.TarInfo(path or ".")
        info.mode, info.uid, info.gid = member.mode & 0o7777, member.uid, member.gid
        info.mtime = int(member.mtime) if self.clamp is None else min(int(member.mtime), self.clamp)
        info.pax_headers = {}
        for key, value in sorted(member.pax_headers.items()):
            prefix = next((p for p in XATTR_PREFIXES if key.startswith(p)), None)
            if prefix is None:
                continue
            if key[len(prefix):].startswith(SQUASHFS_XATTRS):
                info.pax_headers[key] = value
            else:
                self.stats.dropped.setdefault(key[len(prefix):], []).append("/" + path)
        if link is not None:
            info.type, info.linkname = tarfile.LNKTYPE, link
        else:
            info.type = member.type if member.type != tarfile.AREGTYPE else tarfile.REGTYPE
            if member.issym():
                info.linkname = member.linkname
            elif member.ischr() or member.isblk():
                info.devmajor, info.devminor = member.devmajor, member.devminor
            elif member.isreg() or member.type in tarfile.REGULAR_TYPES:
                info.type, info.size = tarfile.REGTYPE, member.size
        sink = self.visit(info) if self.visit is not None else None
        self.emitted[path] = path
        self.stats.entries += 1
        self.stats.newest = max(self.stats.newest, info.mtime)
        if info.type != tarfile.REGTYPE or info.size == 0:
            self.tar.addfile(info)
            return
        assert data is not None
        self.stats.bytes += info.size
        self.tar.addfile(info, _Tee(reader.read_data(data, info.size), sink))

    def add_extra(self, info: tarfile.TarInfo, src: Path | None) -> None:
        """A file or directory bankboot adds (an image's own kernel): after the layers, owned by root."""
        path = normalize(info.name, "bankboot")
        if path in self.emitted:
            if info.isdir():
                return
            raise LayerError(f"the image already has /{path}, where bankboot puts its own file")
        self.emitted[path] = path
        self.stats.entries += 1
        if src is None:
            self.tar.addfile(info)
            return
        with open(src, "rb") as f:
            self.tar.addfile(info, f)

    def close(self) -> None:
        self.tar.close()

    def abort(self) -> None:
        """Stop without writing the end of the archive (the reader is gone, or must not take it as whole)."""
        self.tar.closed = True
        self.tar.fileobj.closed = True  # tarfile's stream: its __del__ would flush


class _Tee:
    """A file-like view of a member's data pieces, copying them to `sink` (the skeleton) as they pass."""

    def __init__(self, pieces: Iterator[bytes], sink: BinaryIO | None) -> None:
        self.pieces, self.sink, self.buf = pieces, sink, b""

    def read(self, n: int = -1) -> bytes:
        while len(self.buf) < n or n < 0:
            piece = next(self.pieces, b"")
            if not piece:
                break
            if self.sink is not None:
                self.sink.write(piece)
            self.buf += piece
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        return out


def flatten(layers: list[Layer], out: IO[bytes], clamp: int | None = None, visit: Visitor | None = None,
            extras: Callable[[], list[tuple[tarfile.TarInfo, Path | None]]] | None = None) -> FlattenStats:
    """Write the merged tree of `layers` to `out` as one PAX tar. `visit` sees every entry written (and may
    return a file to copy its data into); `extras`, called once the layers are written, gives the files
    bankboot adds."""
    f = Flattener(layers, out, clamp, visit)
    try:
        if len(layers) > 1:
            f.scan_upper()
        f.write_layers()
        for info, src in (extras() if extras else []):
            f.add_extra(info, src)
    except BaseException:
        f.abort()
        raise
    f.close()
    return f.stats
