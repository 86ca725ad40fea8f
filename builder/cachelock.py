"""One builder at a time per cache entry. The cache (build/cache, or $XDG_CACHE_HOME/bankboot) is shared by
every bankboot run on the machine: two `bankboot initramfs` at once, a test suite run by two pytest-xdist
workers, or two checkouts pointing at one cache. Each entry is made in a temp directory and renamed into
place, but two makers of the same entry would both do the work and the second rename would replace (or
fail on) what the first one is already reading. An advisory lock beside the entry makes the second one wait
and then find the entry made."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def cache_lock(entry: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<entry>.lock` (created beside the entry) for the block: check whether the
    entry exists again inside it, since another process may have made it while this one waited."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(entry.parent / f"{entry.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
