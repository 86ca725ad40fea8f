"""builder/squashfs.py against real mksquashfs images: every file rebuilt from the blocks and fragment its
extents name is the rootfs's file, through symlinks of every kind, hard links, sparse files and metadata
spanning many blocks; and the manifest's preflight ranges cover exactly the init's files."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from builder.image import ImageError, make_squashfs, preflight_ranges
from builder.squashfs import Squashfs, SquashfsError, merge_ranges


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, Squashfs]:
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    (root / "usr/lib/deep/er/still").mkdir(parents=True)
    (root / "bin/big").write_bytes(os.urandom(700_000) + b"x" * 300_000)  # blocks + a tail in a fragment
    (root / "bin/exact").write_bytes(os.urandom(131072 * 2))  # whole blocks only, no fragment
    (root / "bin/sparse").write_bytes(b"a" + bytes(600_000) + b"z")
    (root / "bin/empty").write_bytes(b"")
    os.link(root / "bin/big", root / "bin/hardlink")  # an extended file inode (more than one link)
    for i in range(3000):  # directory and inode tables over many metadata blocks
        (root / "usr/lib/deep" / f"file-{i:04d}-{'n' * (i % 40)}").write_text(f"content {i}\n" * (i % 7))
    (root / "usr/lib/deep/er/still/leaf").write_bytes(b"leaf\n")
    os.symlink("../usr/lib/deep/er", root / "bin/rel-dir")
    os.symlink("/usr/lib/deep/er/still/leaf", root / "bin/abs-file")
    os.symlink("rel-dir/still/../still/leaf", root / "bin/via-dotdot")
    os.symlink("loop-b", root / "bin/loop-a")
    os.symlink("loop-a", root / "bin/loop-b")
    sq = tmp_path_factory.mktemp("img") / "rootfs.squashfs"
    make_squashfs(root, sq)
    return root, Squashfs(str(sq))


def test_every_file_rebuilds_from_its_blocks(tree) -> None:
    root, image = tree
    checked = 0
    for f in root.rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert image.read_file("/" + str(f.relative_to(root))) == f.read_bytes(), f
            checked += 1
    assert checked > 3000


def test_symlinks_resolve_inside_the_image(tree) -> None:
    _, image = tree
    for path in ("/bin/abs-file", "/bin/rel-dir/still/leaf", "/bin/via-dotdot"):
        assert image.lookup(path)[3] == "/usr/lib/deep/er/still/leaf"
        assert image.read_file(path) == b"leaf\n"
    with pytest.raises(SquashfsError, match="too many levels of symlinks"):
        image.lookup("/bin/loop-a")
    with pytest.raises(SquashfsError, match="no /bin/missing"):
        image.lookup("/bin/missing")
    with pytest.raises(SquashfsError, match="not a regular file"):
        image.extents("/bin/rel-dir")


def test_extents_hold_exactly_the_compressed_data(tree) -> None:
    _, image = tree
    big = image.extents("/bin/big")
    assert len(big) == 1_000_000 // 131072 + 1  # its blocks, then its fragment
    assert image.extents("/bin/hardlink") == big
    assert all(start + length <= image.bytes_used for start, length in big)
    exact = image.extents("/bin/exact")
    assert len(exact) == 2 and exact[0][0] + exact[0][1] == exact[1][0]
    assert image.extents("/bin/empty") == []
    ranges = merge_ranges(big)
    assert all(o % 4096 == 0 and n % 4096 == 0 for o, n in ranges)
    assert all(a[0] + a[1] < b[0] for a, b in itertools.pairwise(ranges))
    assert merge_ranges([(5000, 10), (8000, 100)]) == [[4096, 4096]]
    assert merge_ranges([(9000, 100), (5000, 10), (20000, 1)]) == [[4096, 8192], [16384, 4096]]


def test_the_preflight_ranges_cover_the_init_and_its_libraries(aarch64, tmp_path: Path) -> None:
    """A rootfs whose init is a dynamically linked program: the ranges hold its blocks and those of its
    ELF interpreter and libraries, found the way the device's preflight finds them."""
    from builder.pysysroot import locate_sysroot

    sysroot = locate_sysroot(aarch64.board.arch).root
    root = tmp_path / "rootfs"
    libs = ("lib/ld-linux-aarch64.so.1", *(f"lib/aarch64-linux-gnu/{n}" for n in
                                           ("libc.so.6", "libm.so.6", "libz.so.1", "libexpat.so.1")))
    for rel in ("usr/bin/python3.11", *libs):
        src = (sysroot / rel).resolve()
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(src.read_bytes())
    (root / "sbin").mkdir()
    os.symlink("../usr/bin/python3.11", root / "sbin/init")
    (root / "etc").mkdir()
    (root / "etc/unrelated").write_bytes(os.urandom(400_000))
    sq = tmp_path / "rootfs.squashfs"
    make_squashfs(root, sq)
    got = preflight_ranges(root, sq, "arm64")
    image = Squashfs(str(sq))
    want = merge_ranges([e for f in ("usr/bin/python3.11", *libs) for e in image.extents("/" + f)])
    assert got == {"init": "/sbin/init", "ranges": want}  # python3.11 needs exactly those five
    # Another file's blocks are not read, but for the 4096-byte verity blocks shared at their edges.
    shared = sum(max(0, min(o + n, uo + un) - max(o, uo)) for o, n in got["ranges"]
                 for uo, un in image.extents("/etc/unrelated"))
    assert shared <= 2 * 4096
    os.unlink(root / "lib/aarch64-linux-gnu/libm.so.6")
    with pytest.raises(ImageError, match="libm.so.6, needed by .* is not in the image"):
        preflight_ranges(root, sq, "arm64")
