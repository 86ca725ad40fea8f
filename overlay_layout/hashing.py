"""Hashing while reading, and copying while hashing: the one loop every verified read or copy of image
data goes through (bankctl stage, the init's full check, the loader install, bankboot image's checks).
One pass over the data with one reusable buffer: on a slow board the copy is the update's cost."""

from __future__ import annotations

import os
import sys

from overlay_layout import durable
from overlay_layout.errors import BankbootError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# The frozen init and bankctl have no OpenSSL: hashlib.sha256 is the builtin module there, and importing
# hashlib (which tries every OpenSSL and builtin algorithm) is a cost the boot need not pay. The host's
# Python keeps OpenSSL's, the fastest it has.
if getattr(sys, "frozen", False) and not TYPE_CHECKING:
    from _sha256 import sha256 as _default_sha256
else:
    from hashlib import sha256 as _default_sha256

BLOCK = 4 << 20  # one read, hash and write per 4 MB: large enough that Python's per-call cost vanishes

# The SHA-256 every check of image data uses (read it as hashing.sha256 at the time of use, not imported by
# name). The frozen program carries Python's own (plain C); once bankctl has loaded the TLS piece,
# OpenSSL's, which uses the CPU's SHA-256 instructions where it has them (a tenth of the instructions on an
# ARMv8 core: docs/lifecycle.md). Never switched at boot.
sha256: Callable[..., Any] = _default_sha256


def use_kernel() -> str | None:
    """Hash with the kernel's crypto socket from now on (kernelhash.py: its fastest SHA-256, the CPU's own
    instructions where the board has them). None when it does, else why not (hashing stays as it was)."""
    global sha256
    from overlay_layout import kernelhash

    why = kernelhash.available()
    if why is None:
        sha256 = kernelhash.KernelSha256
    return why


def accelerated() -> bool:
    """Whether hashing has moved off the frozen program's portable C (to the kernel or OpenSSL)."""
    return sha256 is not _default_sha256 or not getattr(sys, "frozen", False)


def use_openssl() -> bool:
    """Hash with OpenSSL from now on, where its `_hashlib` extension is loaded (tlspiece.install)."""
    global sha256
    try:
        import _hashlib
    except ImportError:
        return False
    sha256 = _hashlib.openssl_sha256
    return True


class ShortRead(OSError, BankbootError):
    """The source ended (or failed) before `size` bytes: `done` says how many were read."""

    def __init__(self, done: int, message: str) -> None:
        super().__init__(message)
        self.done = done


def hash_fd(fd: int, offset: int = 0, size: int | None = None,
            progress: Callable[[int, int], None] | None = None, dest: int | None = None) -> tuple[int, str]:
    """sha256 of `size` bytes at `offset` of `fd` (to its end when size is None), also written to the
    descriptor `dest` when given: (bytes read, hex digest). A source shorter than `size` is a ShortRead
    naming how far it got; a read error is a ShortRead too (the caller names the file)."""
    h = sha256()
    buf = memoryview(bytearray(BLOCK))
    done = 0
    while size is None or done < size:
        want = BLOCK if size is None else min(BLOCK, size - done)
        try:
            n = os.preadv(fd, [buf[:want]], offset + done)
        except OSError as e:
            raise ShortRead(done, f"read failed after {done} bytes: {e.strerror}") from e
        if n == 0:
            break
        chunk = buf[:n]
        h.update(chunk)
        if dest is not None:
            durable.checkpoint("copy a block")  # the fault-injection seam: a power cut mid-copy
            durable.write_all(dest, chunk)
        done += n
        if progress is not None:
            progress(done, size if size is not None else done)
    if size is not None and done != size:
        raise ShortRead(done, f"ends after {done} of {size} bytes")
    return done, h.hexdigest()


def hash_file(path: str, size: int | None = None) -> tuple[int, str]:
    """sha256 of a file's first `size` bytes (all of it when None): (bytes, hex digest)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return hash_fd(fd, 0, size)
    finally:
        os.close(fd)


def copy_hashed(fd: int, offset: int, size: int | None, dest: str,
                progress: Callable[[int, int], None] | None = None) -> tuple[int, str]:
    """Copy `size` bytes at `offset` of `fd` (to its end when None) into the new file `dest` (never an
    existing one), fsynced, hashing as it goes: (bytes, hex digest). `dest` is removed when anything
    fails; comparing the digest with what the manifest signs is the caller's, who knows what to say."""
    durable.checkpoint(f"copy into {dest}")
    return durable.fill_file(dest, lambda out: hash_fd(fd, offset, size, progress, out), exclusive=True)
