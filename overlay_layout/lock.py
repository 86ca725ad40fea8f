"""One bankctl at a time on the banks partition: an flock on `.lock` at its root. Mutating commands take
it exclusively, status and log shared, so `gc` cannot remove a stage in progress and two `stage` or
`mark-good` runs cannot interleave their writes to state.json. An flock dies with its process, so a
power cut or a killed bankctl never leaves the partition locked."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from overlay_layout.errors import Busy

LOCK_FILE = ".lock"
LOCK_WAIT = 10.0  # seconds a command waits for another one to finish before it gives up


class LockError(Busy):
    pass


@contextmanager
def lock_banks(root: str, exclusive: bool = True, wait: float | None = None) -> Iterator[None]:
    path = os.path.join(root, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        try:  # a read-only partition: nothing can be written, so there is nothing to serialise
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            yield
            return
    try:
        deadline = time.monotonic() + (LOCK_WAIT if wait is None else wait)
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockError(f"another bankctl is working on {root} (it holds {path}); "
                                    f"try again when it has finished") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
