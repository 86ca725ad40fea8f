"""The cpio writer and the compressors against the host's own tools: GNU cpio reads back what we write,
and zstd/lz4 round-trip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder import compress
from tests.trees import archive, sample_tree


def test_gnu_cpio_lists_every_entry_with_type_mode_and_device(tmp_path: Path) -> None:
    listing = subprocess.run(["cpio", "-t", "-v", "--quiet"], input=archive(sample_tree(), mtime=0),
                             capture_output=True, check=True).stdout.decode()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing.splitlines()}
    assert set(lines) == {"bin", "bin/hello", "bin/sh", "dev", "dev/console", "dev/vda", "empty", "etc",
                          "etc/conf", "etc/odd", "tmp"}
    assert lines["dev/console"].startswith("crw-------")
    assert "5,   1" in lines["dev/console"] or "5, 1" in lines["dev/console"]
    assert lines["dev/vda"].startswith("brw-rw----")
    assert lines["bin/hello"].startswith("-rwxr-xr-x")
    assert lines["tmp"].startswith("drwxrwxrwt")
    assert "bin/sh -> hello" in lines["bin/sh"]
    for line in listing.splitlines():
        assert " root     root " in line or " 0        0 " in line, line


def test_gnu_cpio_extracts_the_same_contents(tmp_path: Path) -> None:
    tree = sample_tree()
    subprocess.run(["cpio", "-i", "-d", "-m", "--quiet", "--no-absolute-filenames"], cwd=tmp_path,
                   input=archive(tree), check=True)
    assert (tmp_path / "bin/hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "etc/conf").read_bytes() == b"a=1\n" * 1000
    assert (tmp_path / "etc/odd").read_bytes() == b"xxx"
    assert os.readlink(tmp_path / "bin/sh") == "hello"
    assert (tmp_path / "bin/hello").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("method", ["zstd", "gzip", "xz", "lz4", "none"])
def test_compression_round_trips_deterministically(method: str) -> None:
    data = archive(sample_tree(), mtime=0) * 50
    packed = compress.compress(data, method)
    assert compress.compress(data, method) == packed
    assert compress.decompress(packed, method) == data


def test_compression_uses_the_formats_the_kernel_accepts() -> None:
    data = b"initramfs" * 1000
    assert compress.compress(data, "lz4")[:4] == bytes.fromhex("02214c18")  # lz4 legacy frame
    xz = compress.compress(data, "xz")
    assert xz[:6] == b"\xfd7zXZ\x00" and xz[7] == 0x01  # stream flags: CRC32 check
    assert compress.compress(data, "gzip")[4:8] == b"\0\0\0\0"  # no timestamp
