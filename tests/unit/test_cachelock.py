"""builder/cachelock.py: a second maker of a cache entry waits for the first and finds the entry made."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from builder.cachelock import cache_lock


def _make(entry: str, log: str) -> None:
    path = Path(entry)
    with cache_lock(path):
        if not path.exists():
            with open(log, "a") as f:
                f.write("made\n")
            time.sleep(0.3)  # the other process tries now, and must wait
            path.write_text("entry")


def test_two_makers_of_one_entry_make_it_once(tmp_path: Path) -> None:
    entry, log = tmp_path / "cache" / "frozen" / "abc", tmp_path / "log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_make, args=(str(entry), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert log.read_text() == "made\n"
    assert entry.read_text() == "entry"
