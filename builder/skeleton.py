"""A picture of an image's tree on this machine, without its data, for the checks that read a root
filesystem directory (its architecture, lint, persistent paths, the init's files for preflight, the image's
own kernel) when the image came as layers or a tarball and was never unpacked.

Directories and symlinks are made as they are; every regular file is a sparse placeholder of its size and
permission bits, filled with its real bytes when something asks (`fill`, from the squashfs just built), or
as it streams past when `keep` says its content is needed during the build (the kernel's modules, ld.so's
configuration). Device nodes and FIFOs are left out: nothing checked reads them, and making them takes
root. Ownership is not kept here (the squashfs keeps it); nothing checked depends on it. Absolute symlinks
are made relative, so that following one here stays inside the skeleton."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from builder.elf import resolve_in_root
from builder.layerread import LayerError


def _relative_target(path: str, target: str) -> str:
    """An absolute symlink target as the same place relative to the link: inside the skeleton it then
    means what it means in the image, and nothing that follows it here reaches this machine's own files."""
    if not target.startswith("/"):
        return target
    return os.path.relpath("/" + target.lstrip("/"), "/" + os.path.dirname(path))


ALWAYS_KEPT = ("etc/ld.so.conf", "etc/ld.so.conf.d/")  # small, and read by every preflight


class Skeleton:
    def __init__(self, root: Path, keep: Callable[[str], bool] | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.placeholders: set[str] = set()  # paths (relative) whose bytes are not here yet
        self.alias: dict[str, str] = {}  # a hardlink's path -> the path first written for its inode
        self.read_squashfs: Callable[[str], bytes] | None = None
        self._sink: BinaryIO | None = None

    def host(self, path: str) -> Path:
        return self.root / path if path not in ("", ".") else self.root

    def visit(self, info: tarfile.TarInfo) -> BinaryIO | None:
        """layers.Visitor: record one entry of the flattened tree; return where its data goes, if kept."""
        self._close_sink()
        path = "" if info.name == "." else info.name
        host = self.host(path)
        try:
            if info.isdir():
                host.mkdir(exist_ok=True)
                host.chmod((info.mode & 0o777) | 0o700)  # always writable by us, to fill in children
            elif info.issym():
                os.symlink(_relative_target(path, info.linkname), host)
            elif info.islnk():
                if not os.path.lexists(self.host(info.linkname)):
                    return None  # a hardlink to a device node or FIFO, which the skeleton leaves out
                os.link(self.host(info.linkname), host, follow_symlinks=False)
                self.alias[path] = self.alias.get(info.linkname, info.linkname)
            elif info.isreg():
                kept = path.startswith(ALWAYS_KEPT) or (self.keep is not None and self.keep(path))
                f = open(host, "wb")  # closed by the next visit, or close()
                f.truncate(0 if kept else info.size)
                os.chmod(host, (info.mode & 0o777) | 0o600)
                if kept:
                    self._sink = f
                    return f
                f.close()
                self.placeholders.add(path)
        except OSError as e:
            raise LayerError(f"cannot record /{path} of the image in {self.root}: {e}") from None
        return None

    def _close_sink(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def close(self) -> None:
        self._close_sink()

    def fill(self, host: str | Path) -> None:
        """Give a placeholder its real bytes before someone reads it (initfs.preflight's `fetch` hook; any
        path outside the tree, or already filled, is left alone)."""
        try:
            named = str(Path(host).relative_to(self.root))
        except ValueError:
            return
        rel = resolve_in_root(self.root, "/" + named).lstrip("/")  # the file itself, through any symlinks
        rel = self.alias.get(rel, rel)
        if rel not in self.placeholders:
            return
        if self.read_squashfs is None:
            raise LayerError(f"/{rel}: its content is not available before the squashfs is built")
        data = self.read_squashfs("/" + rel)
        with open(self.host(rel), "r+b") as f:  # hardlinks to it are the same inode: filled too
            f.write(data)
            f.truncate(len(data))
        self.placeholders.discard(rel)
