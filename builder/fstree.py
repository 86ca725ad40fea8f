"""An in-memory picture of a filesystem tree (files by source path or bytes, dirs, symlinks, device nodes).
The initramfs is assembled here rather than in a staging directory so that device nodes such as
/dev/console need no root, and so that ownership and timestamps are ours to fix for reproducibility."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from builder.errors import BuildError


class TreeError(BuildError, ValueError):
    """A path or file the tree refuses (escapes it, clashes with an entry, cannot be copied); a call that breaks
    the API stays a plain ValueError."""


@dataclass
class Entry:
    kind: str  # "file", "dir", "symlink", "char", "block"
    mode: int  # permission bits only
    src: Path | None = None  # file content from this host path...
    data: bytes | None = None  # ...or these bytes
    target: str | None = None  # symlink target
    rdev: tuple[int, int] = (0, 0)

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.src is not None:
            return self.src.read_bytes()
        return b""


def norm(path: str | PurePosixPath) -> str:
    """Canonical key: relative, no '.', no '..' (which would escape the tree), no trailing slash."""
    parts = []
    for part in PurePosixPath(path).parts:
        if part in ("/", "."):
            continue
        if part == "..":
            raise TreeError(f"path {path!r} escapes the tree")
        parts.append(part)
    if not parts:
        raise TreeError(f"empty path {path!r}")
    return "/".join(parts)


class FsTree:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def __contains__(self, path: str) -> bool:
        return norm(path) in self.entries

    def get(self, path: str) -> Entry | None:
        return self.entries.get(norm(path))

    def _put(self, path: str, entry: Entry) -> None:
        key = norm(path)
        old = self.entries.get(key)
        if old is not None and old != entry and not (old.kind == entry.kind == "dir"):
            raise TreeError(f"{key!r} added twice with different contents ({old.kind} then {entry.kind})")
        parent = str(PurePosixPath(key).parent)
        if parent != ".":
            self.add_dir(parent)
        if old is None or old.kind != "dir":
            self.entries[key] = entry

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        key = norm(path)
        old = self.entries.get(key)
        if old is not None:
            if old.kind != "dir":
                raise TreeError(f"{key!r} is a {old.kind}, cannot make it a directory")
            return
        self._put(key, Entry("dir", mode))

    def add_file(self, path: str, *, src: Path | None = None, data: bytes | None = None,
                 mode: int | None = None) -> None:
        if (src is None) == (data is None):
            raise ValueError("add_file takes exactly one of src= and data=")
        if mode is None:
            mode = stat.S_IMODE(src.stat().st_mode) if src is not None else 0o644
        self._put(path, Entry("file", mode, src=src, data=data))

    def add_symlink(self, path: str, target: str) -> None:
        self._put(path, Entry("symlink", 0o777, target=target))

    def replace_with_symlink(self, path: str, target: str) -> None:
        """Turn a file already in the tree into a symlink: a second copy of a library becomes a link."""
        old = self.get(path)
        if old is None or old.kind != "file":
            raise TreeError(f"{norm(path)!r} is not a file in the tree")
        self.entries[norm(path)] = Entry("symlink", 0o777, target=target)

    def add_device(self, path: str, kind: str, major: int, minor: int, mode: int = 0o600) -> None:
        if kind not in ("char", "block"):
            raise ValueError(f"device kind must be char or block, not {kind!r}")
        self._put(path, Entry(kind, mode, rdev=(major, minor)))

    def add_host_path(self, dest: str, src: Path) -> None:
        """Copy one host path (file, symlink or directory, recursively) into the tree, keeping symlinks
        as symlinks and permission bits as they are."""
        st = src.lstat()
        if stat.S_ISLNK(st.st_mode):
            self.add_symlink(dest, os.readlink(src))
        elif stat.S_ISDIR(st.st_mode):
            self.add_dir(dest, stat.S_IMODE(st.st_mode))
            for child in sorted(os.listdir(src)):
                self.add_host_path(f"{dest}/{child}", src / child)
        elif stat.S_ISREG(st.st_mode):
            self.add_file(dest, src=src, mode=stat.S_IMODE(st.st_mode))
        else:
            raise TreeError(f"{src}: cannot copy a {stat.filemode(st.st_mode)[0]!r} file into the tree")

    def size(self) -> int:
        """Bytes of file content: what the initramfs takes in RAM once unpacked."""
        total = 0
        for e in self.entries.values():
            if e.kind == "file":
                total += len(e.data) if e.data is not None else e.src.stat().st_size if e.src else 0
        return total
