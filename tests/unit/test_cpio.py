"""The cpio writer and reader (GNU cpio reads it back in tests/host/test_cpio_tools.py)."""

from __future__ import annotations

import io

import pytest

from builder.cpio import write_cpio
from builder.fstree import FsTree
from tests.trees import archive, sample_tree


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


def test_the_reader_gets_back_every_regular_file() -> None:
    """`bankboot disk` and `inspect` read an initramfs's keys and settings back with read_cpio."""

    from builder.cpio import read_cpio
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
