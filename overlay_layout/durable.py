"""The one way anything durable is written to the banks partition: write a temp file in the same
directory, fsync it, rename it over the target, fsync the directory. After a power cut at any instant
the target is either the old content or the new one, never a mix or nothing."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

# Tests set this to simulate a power cut: it is called before every durable operation and may raise.
before_write: Callable[[str], None] | None = None


def _about_to(what: str) -> None:
    if before_write is not None:
        before_write(what)


def checkpoint(what: str) -> None:
    """For writers of their own (a file copied and fsynced): the same fault-injection seam as ours."""
    _about_to(what)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(fd: int, path: str) -> None:
    """Everything written so far to the filesystem holding `fd` (at `path`, for the message) on disk, with one
    flush: syncfs(2) writes back and waits for all of that filesystem's dirty data and metadata (ext4 commits
    its journal). For a batch of metadata changes (nofollow's walk making several directories), where an
    fsync of each parent would be a flush each."""
    from overlay_layout.native import api

    err = api.syncfs(fd)
    if err != 0:
        raise OSError(err, f"syncfs {path}: {os.strerror(err)}")


def _tmp_name(path: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, f".{name}.tmp-{os.getpid()}")


def is_temp_name(name: str) -> bool:
    """A temp file of write_file or set_symlink (left behind only by a power cut)."""
    return name.startswith(".") and ".tmp-" in name


def fill_file(path: str, fill: Callable[[int], T], exclusive: bool = False, mode: int = 0o644) -> T:
    """Create `path` (an existing one is truncated, or refused when `exclusive`), let `fill` write it through
    the descriptor it gets, fsync it. Returns what `fill` returns; on any failure the file is removed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, mode)
    try:
        result = fill(fd)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return result


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until all of `data` is written (a write may take less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_file(path: str, data: bytes, mode: int = 0o644, wait: bool = True) -> None:
    """wait=False: atomic but not waited for, for a record nothing depends on (the boot log's entry for a
    plain boot of the committed image): no fsync, so the boot does not wait for the storage's flushes (two
    journal commits, tens of milliseconds on an SD card). ext4 in ordered mode writes a file renamed over
    another before the commit that holds the rename (auto_da_alloc), so a power cut still leaves the old
    content or the new, never a mix; only the new content may be lost, until the next commit (5 s) or the
    next durable write, which commits it too."""
    _about_to(f"write {path}")
    tmp = _tmp_name(path)
    if wait:
        fill_file(tmp, lambda fd: write_all(fd, data), mode=mode)
    else:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
    os.rename(tmp, path)
    if wait:
        fsync_dir(os.path.dirname(path) or ".")


def set_symlink(path: str, target: str) -> None:
    """Point the symlink `path` at `target` atomically (a new link renamed over the old one)."""
    _about_to(f"symlink {path} -> {target}")
    tmp = _tmp_name(path)
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.rename(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def remove(path: str) -> None:
    """Remove a file or symlink durably (absent already is fine)."""
    _about_to(f"remove {path}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(os.path.dirname(path) or ".")


def make_dirs(path: str, mode: int = 0o755) -> None:
    """mkdir -p, with every directory that was created made durable in its parent."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        _about_to(f"mkdir {d}")
        os.mkdir(d, mode)
        fsync_dir(os.path.dirname(d))


def rename(src: str, dst: str) -> None:
    """Rename (a finished directory into place, say) and make it durable in both parents."""
    _about_to(f"rename {src} -> {dst}")
    os.rename(src, dst)
    fsync_dir(os.path.dirname(dst) or ".")
    if os.path.dirname(src) != os.path.dirname(dst):
        fsync_dir(os.path.dirname(src) or ".")


def remove_tree(path: str) -> None:
    """rm -rf that never follows symlinks (an overlay upper may hold anything). Used for what is already
    unreachable (unpointed images, staging leftovers, old backups), so it needs no ordering of its own;
    callers fsync the parent when the removal must be durable."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        for entry in os.scandir(path):
            remove_tree(entry.path)
        os.rmdir(path)
    else:
        os.unlink(path)


def remove_tree_quietly(path: str) -> None:
    """remove_tree for clean-ups on a path that already failed (a full or failing disk): errors are the
    disk's, already reported by the caller, and must not hide the original one."""
    try:
        remove_tree(path)
    except OSError:
        pass
