"""Directories on the banks partition (and in a new root), reached without following a link someone planted.

The init and bankctl build paths from names on the banks partition (an image's upper, work, backups and
utils; a persistent path's upper and work; the userdata directory) and hand some of them to the kernel as
overlay upper/work or a bind mount, which would follow a symlink. Anyone holding the card can put one
there: relative (to another image's upper) or absolute, which resolves in the init's own namespace (the
banks partition at /run/bankboot/banks, the initramfs). So a directory is reached one name at a time from
a root the caller trusts, each name opened with O_NOFOLLOW | O_DIRECTORY relative to its parent's
descriptor and required to be on the root's filesystem: no symlink is ever followed, and nothing crosses
into another mount. Where the directory is ours to make (ensure_dirs), a symlink in its place is removed
and replaced by an empty directory, and reported; where it is not (check_dirs), it is an error.

openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) refuses the same links in one call, but cannot say which name
is the link, and that is what replacing it needs; a walk name by name never meets "..", so RESOLVE_BENEATH
would add nothing.

Handing the walked path to mount(2) as text afterwards is safe because nothing can rename in between: the
init runs as PID 1 with no other process (the self-test's leftovers are killed before the persistent paths
are mounted), and the caller checks after mounting that the path still names the directory walked
(same_dir). bankctl runs as root in the booted image, which can write the partition anyway."""

from __future__ import annotations

import errno
import os
import stat

from overlay_layout import durable

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
Ident = tuple[int, int]  # (st_dev, st_ino) of a directory walked


def _names(rel: str) -> list[str]:
    names = [n for n in rel.split("/") if n]
    if any(n in (".", "..") for n in names):
        raise ValueError(f"{rel!r}: a path below the root, without . or ..")
    return names


def _make(parent: int, name: str, path: str, mode: int) -> int:
    durable.checkpoint(f"mkdir {path}")
    os.mkdir(name, mode, dir_fd=parent)
    return os.open(name, _DIR, dir_fd=parent)


def _walk(root: str, rel: str, replaced: list[str] | None, mode: int, unsynced: list[str] | None = None) -> Ident:
    """The walk (see the module's docstring). What it changed (links removed, directories made) is made
    durable once, at the end, by one syncfs of root's filesystem instead of an fsync of each parent (the
    first boot made a dozen, a flush each): every change is metadata of that one filesystem (the
    walk never leaves it), so after the syncfs the whole chain is on disk; before it, nothing has used the
    chain, and a power cut only leaves part of it to make again on the next boot (a walk that finds a
    directory goes on from it). With `unsynced`, the syncfs is the caller's (sync_walked), once for several
    walks, before any of their directories is used: the walk appends root to it instead."""
    fd = os.open(root, _DIR)
    path = root.rstrip("/") or "/"
    changed = False
    try:
        dev = os.fstat(fd).st_dev
        for name in _names(rel):
            path = f"{path.rstrip('/')}/{name}"
            try:
                nxt = os.open(name, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if replaced is None:
                    raise OSError(errno.ENOENT, f"{path} does not exist") from None
                nxt = _make(fd, name, path, mode)
                changed = True
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.lstat(name, dir_fd=fd)
                if not stat.S_ISLNK(st.st_mode):
                    raise OSError(errno.ENOTDIR, f"{path} is not a directory") from e
                target = os.readlink(name, dir_fd=fd)
                if replaced is None:
                    raise OSError(errno.ELOOP, f"{path} is a symlink (to {target})") from e
                durable.checkpoint(f"remove {path}")
                os.unlink(name, dir_fd=fd)
                replaced.append(f"{path} was a symlink to {target}: replaced by an empty directory, the link "
                                f"never followed")
                nxt = _make(fd, name, path, mode)
                changed = True
            os.close(fd)
            fd = nxt
            st = os.fstat(fd)
            if st.st_dev != dev:
                raise OSError(errno.EXDEV, f"{path} is on another filesystem than {root}")
        if changed and unsynced is not None:
            unsynced.append(root)
        elif changed:
            durable.sync_filesystem(fd, root)
        st = os.fstat(fd)
        return st.st_dev, st.st_ino
    finally:
        os.close(fd)


def ensure_dirs(root: str, rel: str, replaced: list[str], mode: int = 0o755,
                unsynced: list[str] | None = None) -> Ident:
    """Make every directory of root/rel a real one on root's filesystem: missing ones are made (durably), a
    symlink in place of one is replaced by an empty directory (a sentence saying so is appended to
    `replaced`), anything else is an OSError naming the path. Returns the last one's identity. `unsynced`:
    made durable later, with other walks, by sync_walked(unsynced)."""
    return _walk(root, rel, replaced, mode, unsynced)


def sync_walked(unsynced: list[str]) -> None:
    """Make what the walks given `unsynced` changed durable: one syncfs of each root's filesystem, however
    many walks changed it (a sealed image's first boot makes two directories per persistent path)."""
    for root in dict.fromkeys(unsynced):
        fd = os.open(root, _DIR)
        try:
            durable.sync_filesystem(fd, root)
        finally:
            os.close(fd)
    unsynced.clear()


def check_dirs(root: str, rel: str) -> Ident:
    """Every directory of root/rel must be a real one on root's filesystem (nothing is made or replaced);
    OSError names the first that is not."""
    return _walk(root, rel, None, 0)


def same_dir(path: str, ident: Ident) -> bool:
    """`path` (followed) is still the directory walked: the check after handing the path to the kernel."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == ident
