"""Compressed initramfs archives kept in the cache by what went in: `zstd -19` takes about 16 s of CPU for
a 14 MB archive, and the same archive is compressed again and again (another bank carrying the same board's
initramfs, a rebuild with nothing changed, every test that builds one). The output depends only on the input
and the compressor (one thread, fixed options), so the input's digest, the command and the tool's version
name it. A hit is checked before it is used: it must decompress to exactly the input (a few tens of
milliseconds), so a damaged cache costs a recompression, never a bad archive."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from builder.paths import cache_dir

KEEP = 48  # entries (a few MB each); the least recently used go first


def _entries() -> Path:
    return cache_dir() / "compressed"


def cached_compress(data: bytes, recipe: str, compress: Callable[[bytes], bytes],
                    decompress: Callable[[bytes], bytes]) -> bytes:
    """compress(data), from the cache when `recipe` (the method, its options and the tool's version) made it
    from the same bytes before."""
    key = hashlib.sha256(recipe.encode() + b"\0" + data).hexdigest()
    entry = _entries() / key
    try:
        out = entry.read_bytes()
    except OSError:
        out = None
    if out is not None:
        try:
            if decompress(out) == data:
                os.utime(entry)  # recently used
                return out
        except Exception:  # a damaged entry (the decompressor says so, any way it does) is only a miss
            pass
    out = compress(data)
    _store(entry, out)
    return out


def _store(entry: Path, out: bytes) -> None:
    """Temp file, rename: two builders at once both write whole entries; a full disk only skips caching."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(out)
        os.replace(tmp, entry)
        _trim(entry.parent)
    except OSError:
        pass


def _trim(folder: Path) -> None:
    entries = []
    stale = time.time() - 3600  # a writer's temp file that old is left by a killed build
    for p in folder.iterdir():
        try:
            mtime = p.stat().st_mtime
        except OSError:
            continue
        if not p.name.startswith("."):
            entries.append((mtime, p))
        elif mtime < stale:
            p.unlink(missing_ok=True)
    for _, p in sorted(entries, reverse=True)[KEEP:]:
        p.unlink(missing_ok=True)
