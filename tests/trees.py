"""A small file tree with every entry kind, and its archive: shared by the cpio tests."""

from __future__ import annotations

import io

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
