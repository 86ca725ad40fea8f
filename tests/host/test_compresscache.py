"""The cache of compressed archives (builder/compresscache.py): a second compression of the same bytes is a
hit, the output is the compressor's own, and a damaged or cut entry is noticed and made again."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder import compress as compression
from builder.compresscache import cached_compress


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("BANKBOOT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "compressed"


def test_the_same_bytes_are_compressed_once_and_a_damaged_entry_is_made_again(cache: Path) -> None:
    data = b"".join(i.to_bytes(4, "little") * 7 for i in range(10000))
    calls = []

    def zstd(raw: bytes) -> bytes:
        calls.append(len(raw))
        return compression.run(["zstd", "-19", "-T1", "-q", "-c"], input=raw, text=False).stdout

    first = cached_compress(data, "zstd-19 test", zstd, lambda out: compression.decompress(out, "zstd"))
    again = cached_compress(data, "zstd-19 test", zstd, lambda out: compression.decompress(out, "zstd"))
    assert first == again and len(calls) == 1
    assert compression.decompress(first, "zstd") == data
    other = cached_compress(data, "zstd-3 test", zstd, lambda out: compression.decompress(out, "zstd"))
    assert other == first and len(calls) == 2  # another recipe is another entry
    for entry in cache.iterdir():  # cut short, then garbage: each is a miss, never handed out
        entry.write_bytes(entry.read_bytes()[:100])
    assert cached_compress(data, "zstd-19 test", zstd, lambda out: compression.decompress(out, "zstd")) == first
    assert len(calls) == 3
    for entry in cache.iterdir():
        entry.write_bytes(b"\x28\xb5\x2f\xfd" + b"x" * 200)
    assert cached_compress(data, "zstd-19 test", zstd, lambda out: compression.decompress(out, "zstd")) == first
    assert len(calls) == 4


def test_compress_gives_the_kernels_formats_from_the_cache(cache: Path) -> None:
    data = bytes(range(256)) * 1000
    for method in ("zstd", "lz4", "xz"):
        out = compression.compress(data, method)
        assert compression.detect(out) == method and compression.decompress(out, method) == data
        assert compression.compress(data, method) == out
    assert len(list(cache.iterdir())) == 3
