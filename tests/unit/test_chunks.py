"""Content-defined chunks: boundaries follow the content, so an insertion early in a file leaves the chunks
after it as they were."""

from __future__ import annotations

import random

import pytest

from overlay_layout import chunks


def data(seed: int, size: int = 4 << 20) -> bytes:
    return random.Random(seed).randbytes(size)


def test_lengths_cover_the_file_within_bounds() -> None:
    d = data(1)
    lengths = chunks.cut(d)
    assert sum(lengths) == len(d)
    assert all(chunks.MIN_CHUNK <= n <= chunks.MAX_CHUNK for n in lengths[:-1])
    assert 8 << 10 < len(d) / len(lengths) < 40 << 10  # the average the anchors give on random bytes


def test_an_insertion_changes_only_the_chunks_around_it() -> None:
    d = data(2)
    edited = d[:100_000] + b"inserted bytes" + d[100_000:]
    before = {digest for _, digest in chunks.index_of(d)}
    after = chunks.index_of(edited)
    new = sum(n for n, digest in after if digest not in before)
    assert new <= 2 * chunks.MAX_CHUNK


def test_incompressible_zeros_are_cut_at_the_maximum() -> None:
    assert chunks.cut(bytes(200 << 10)) == [chunks.MAX_CHUNK] * 3 + [8 << 10]


def test_index_round_trips_and_bad_ones_are_refused() -> None:
    index = chunks.index_of(data(3, 300_000))
    raw = chunks.dump(index)
    assert chunks.parse(raw, "x") == index
    with pytest.raises(chunks.ChunkError, match="not a bankboot chunk index"):
        chunks.parse(raw[:-1], "x")
    with pytest.raises(chunks.ChunkError, match="out of range"):
        chunks.parse(chunks.MAGIC + chunks.ENTRY.pack(0, bytes(32)), "x")
