"""The cpio writer, read back with GNU cpio."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from builder import compress
from builder.cpio import write_cpio
from builder.fstree import FsTree


def sample_tree(order: list[int] | None = None) -> FsTree:
    ops = [
        lambda t: t.add_file("bin/hello", data=b"#!/bin/sh\necho hi\n", mode=0o755),
        lambda t: t.add_file("etc/conf", data=b"a=1\n" * 1000),
        lambda t: t.add_file("etc/odd", data=b"x" * 3),
        lambda t: t.add_symlink("bin/sh", "hello"),
        lambda t: t.add_device("dev/console", "char", 5, 1, 0o600),
        lambda t: t.add_device("dev/vda", "block", 254, 0, 0o660),
        lambda t: t.add_dir("tmp", 0o1777),
        lambda t: t.add_dir("empty"),
    ]
    tree = FsTree()
    for i in order or range(len(ops)):
        ops[i](tree)
    return tree


def archive(tree: FsTree, mtime: int | None = None) -> bytes:
    out = io.BytesIO()
    write_cpio(tree, out, mtime=mtime)
    return out.getvalue()


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


def test_archive_is_reproducible_whatever_the_insertion_order() -> None:
    a = archive(sample_tree(), mtime=0)
    b = archive(sample_tree([7, 6, 5, 4, 3, 2, 1, 0]), mtime=0)
    assert a == b


def test_source_date_epoch_sets_every_mtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    data = archive(sample_tree())
    assert data.count(b"%08X" % 1700000000) == len(sample_tree().entries)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH"):
        archive(sample_tree())


def test_tree_refuses_escaping_and_conflicting_paths() -> None:
    tree = FsTree()
    with pytest.raises(ValueError, match="escapes"):
        tree.add_file("../etc/passwd", data=b"")
    tree.add_file("a/b", data=b"1")
    with pytest.raises(ValueError, match="added twice"):
        tree.add_file("a/b", data=b"2")
    with pytest.raises(ValueError, match="cannot make it a directory"):
        tree.add_file("a/b/c", data=b"")


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


def test_the_reader_gets_back_every_regular_file() -> None:
    """`bankboot disk` and `inspect` read an initramfs's keys and settings back with read_cpio."""
    import io

    from builder.cpio import read_cpio, write_cpio
    from builder.fstree import FsTree

    tree = FsTree()
    tree.add_dir("etc")
    tree.add_file("etc/a.conf", data=b"x=1\n")
    tree.add_file("etc/odd", data=b"12345")  # sizes that need padding
    tree.add_symlink("etc/link", "a.conf")
    tree.add_device("dev/null", "char", 1, 3, 0o666)
    out = io.BytesIO()
    write_cpio(tree, out)
    assert read_cpio(out.getvalue()) == {"etc/a.conf": b"x=1\n", "etc/odd": b"12345"}
