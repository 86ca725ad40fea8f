"""Layers flattened into a squashfs (builder/layers.py, builder/layerread.py): whiteouts, opaque directories,
replaced directories and files, hardlinks, device nodes, ownership and xattrs, checked against umoci's own
unpacking of the same OCI image; and every way a layer can be damaged."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.layerread import Layer, LayerError, LayerReader
from builder.layers import flatten
from builder.pack import pack_layers
from tests.images import CREATED_EPOCH, Entry, oci_image, write_layer

CAP = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # cap_net_raw+ep

BASE = [
    Entry(".", "dir"), Entry("etc", "dir"), Entry("etc/keep", data=b"kept\n"), Entry("etc/gone", data=b"deleted\n"),
    Entry("etc/replaced", data=b"old content\n", uid=1000, gid=1000, mode=0o640),
    Entry("etc/link-to-replaced", "hardlink", target="etc/replaced"),
    Entry("opt", "dir"), Entry("opt/old", data=b"hidden by the opaque marker\n"), Entry("opt/sub", "dir"),
    Entry("opt/sub/deep", data=b"also hidden\n"),
    Entry("var", "dir"), Entry("var/cache", "dir", mode=0o700), Entry("var/cache/x", data=b"under a dir that "
                                                                                             b"becomes a file\n"),
    Entry("usr", "dir"), Entry("usr/bin", "dir"),
    Entry("usr/bin/ping", data=b"\x7fELF pretend\n", mode=0o4755, xattrs={"security.capability": CAP}),
    Entry("usr/bin/ping6", "hardlink", target="usr/bin/ping"),
    Entry("usr/bin/sh", "symlink", target="/usr/bin/busybox"), Entry("usr/bin/busybox", data=b"bb", mode=0o755),
    Entry("dev", "dir"), Entry("dev/console", "char", mode=0o600, dev=(5, 1)),
    Entry("dev/vda", "block", mode=0o660, gid=6, dev=(254, 0)), Entry("run", "dir"), Entry("run/initctl", "fifo"),
    Entry("home", "dir"), Entry("home/user", "dir", uid=1000, gid=1000, mode=0o750),
    Entry("home/user/notes", data=b"n" * 300000, uid=1000, gid=1000, xattrs={"user.comment": "a note"}),
]
UPPER = [
    Entry("etc", "dir", mode=0o751), Entry("etc/.wh.gone"), Entry("etc/replaced", data=b"new content\n"),
    Entry("opt", "dir"), Entry("opt/.wh..wh..opq"), Entry("opt/new", data=b"only this in /opt\n"),
    Entry("var", "dir"), Entry("var/cache", data=b"a file now\n"),
    Entry("etc/again", data=b"deleted, then made again\n"),
]
TOP = [Entry("etc", "dir", mode=0o711), Entry("etc/.wh.again"), Entry("etc/again", data=b"third layer\n")]


@pytest.fixture(scope="module")
def layered(tmp_path_factory) -> str:
    """The three layers as an OCI image (its skopeo reference)."""
    d = tmp_path_factory.mktemp("layers")
    tars = [write_layer(d / "base.tar", BASE), write_layer(d / "upper.tar", UPPER, end_blocks=False),
            write_layer(d / "top.tar", TOP)]
    return oci_image(d / "oci", "layered", tars)


def walk(root: Path) -> dict[str, tuple]:
    """Everything about a tree that the image carries: kind, mode, owner, size, content, target, device,
    user/security xattrs; hardlinked files share an inode number, reported as the group's first path."""
    out: dict[str, tuple] = {}
    first_of: dict[int, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            xattrs = tuple(sorted((a, os.getxattr(p, a, follow_symlinks=False))
                                  for a in os.listxattr(p, follow_symlinks=False)))
            what: tuple = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, xattrs)
            if stat.S_ISREG(st.st_mode):
                link = first_of.setdefault(st.st_ino, rel) if st.st_nlink > 1 else None
                what += (hashlib.sha256(p.read_bytes()).hexdigest(), link)
            elif stat.S_ISLNK(st.st_mode):
                what += (os.readlink(p),)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what += (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[rel] = what
    return out


def test_layers_merge_as_an_overlay_would_and_as_umoci_unpacks_them(layered, tmp_path: Path) -> None:
    from builder.source import open_source

    ref = layered
    src = open_source(ref, None, tmp_path / "work")
    assert src.arch == "arm64" and src.created == 1709294400 and len(src.layers) == 3
    sq = tmp_path / "rootfs.squashfs"
    pack_layers(list(src.layers), sq, src.created)
    subprocess.run(["unsquashfs", "-q", "-d", str(tmp_path / "ours"), str(sq)], check=True, capture_output=True)
    subprocess.run(["umoci", "raw", "unpack", "--image", ref.removeprefix("oci:"), str(tmp_path / "umoci")],
                   check=True, capture_output=True)
    ours, theirs = walk(tmp_path / "ours"), walk(tmp_path / "umoci")
    assert ours == theirs
    # and what that means, spelled out
    assert not (tmp_path / "ours/etc/gone").exists()
    assert sorted(os.listdir(tmp_path / "ours/opt")) == ["new"]
    assert (tmp_path / "ours/var/cache").read_bytes() == b"a file now\n"
    assert (tmp_path / "ours/etc/again").read_bytes() == b"third layer\n"
    assert (tmp_path / "ours/etc/replaced").read_bytes() == b"new content\n"
    # the hardlink in the base layer keeps the content its inode had there, owner and mode too
    st = os.lstat(tmp_path / "ours/etc/link-to-replaced")
    assert (tmp_path / "ours/etc/link-to-replaced").read_bytes() == b"old content\n"
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o640)
    assert os.lstat(tmp_path / "ours/usr/bin/ping").st_ino == os.lstat(tmp_path / "ours/usr/bin/ping6").st_ino
    assert os.getxattr(tmp_path / "ours/usr/bin/ping", "security.capability") == CAP.encode("latin-1")
    assert stat.S_IMODE(os.lstat(tmp_path / "ours/usr/bin/ping").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(tmp_path / "ours/etc").st_mode) == 0o711  # the topmost layer's directory wins
    assert os.lstat(tmp_path / "ours/dev/vda").st_rdev == os.makedev(254, 0)
    # timestamps are clamped to the image's creation time, and none is newer
    assert max(os.lstat(p).st_mtime for p in (tmp_path / "ours").rglob("*")) <= CREATED_EPOCH


def test_the_same_layers_give_the_same_squashfs(layered, tmp_path: Path) -> None:
    from builder.source import open_source

    src = open_source(layered, None, tmp_path / "work")
    pack_layers(list(src.layers), tmp_path / "a.sq", src.created)
    pack_layers(list(src.layers), tmp_path / "b.sq", src.created)
    assert (tmp_path / "a.sq").read_bytes() == (tmp_path / "b.sq").read_bytes()


def members(path: Path, whiteouts: bool = True) -> list[str]:
    with LayerReader(Layer(path, path.name, "auto", whiteouts=whiteouts)) as r:
        return [m.name for m, _ in r]


def test_a_cut_short_or_garbled_tarball_is_an_error(tmp_path: Path) -> None:
    good = write_layer(tmp_path / "good.tar", BASE)
    raw = good.read_bytes()
    assert "etc/keep" in members(good)
    offsets = []
    with tarfile.open(good) as tar:
        offsets = [m.offset for m in tar.getmembers()]
    cases = {
        "at a member boundary": raw[:offsets[10]],
        "inside a header": raw[:offsets[10] + 100],
        "inside a file": raw[:offsets[-1] + 512 + 1000],
        "garbage after a member": raw[:offsets[10]] + b"x" * 512 + raw[offsets[10] + 512:],
    }
    for why, data in cases.items():
        bad = tmp_path / "bad.tar"
        bad.write_bytes(data)
        with pytest.raises(LayerError, match="cut short|damaged|unreadable"):
            members(bad)
        print(why, "refused")
    for tool, suffix in (("gzip", ".gz"), ("zstd", ".zst"), ("xz", ".xz")):
        subprocess.run([tool, "-kqf", str(good)], check=True)
        packed = Path(str(good) + suffix)
        assert "etc/keep" in members(packed)
        short = tmp_path / f"short.tar{suffix}"
        short.write_bytes(packed.read_bytes()[:len(packed.read_bytes()) * 2 // 3])
        with pytest.raises(LayerError, match=f"the {tool} stream is damaged or cut short|cut short|unreadable"):
            members(short)


def test_a_layer_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    tar = write_layer(tmp_path / "l.tar", BASE)
    blob = gzip.compress(tar.read_bytes(), mtime=0)
    (tmp_path / "l.tar.gz").write_bytes(blob)
    digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
    diff_id = f"sha256:{hashlib.sha256(tar.read_bytes()).hexdigest()}"
    ok = Layer(tmp_path / "l.tar.gz", "layer 1", "gzip", digest, diff_id)
    assert flatten([ok], open(os.devnull, "wb")).entries > 10
    wrong = "sha256:" + "0" * 64
    for layer in (Layer(ok.path, "layer 1", "gzip", wrong, diff_id), Layer(ok.path, "layer 1", "gzip", digest, wrong)):
        with pytest.raises(LayerError, match="layer 1: its content does not match its (digest|diff_id)"):
            flatten([layer], open(os.devnull, "wb"))


def test_acls_are_dropped_and_reported(tmp_path: Path) -> None:
    acl = "\x02\x00\x00\x00\x01\x00\x07\x00\xff\xff\xff\xff"
    layer = write_layer(tmp_path / "acl.tar", [Entry("var", "dir"), Entry("var/log", "dir", xattrs={
        "system.posix_acl_default": acl, "user.kept": "yes"})])
    with open(tmp_path / "out.tar", "wb") as out:
        stats = flatten([Layer(layer, "acl.tar", "none", whiteouts=False)], out)
    assert stats.dropped == {"system.posix_acl_default": ["/var/log"]}
    with tarfile.open(tmp_path / "out.tar") as tar:
        assert tar.getmember("var/log").pax_headers == {"SCHILY.xattr.user.kept": "yes"}


def test_a_layered_image_gives_the_same_bank_from_a_layout_an_archive_and_a_registry(aarch64, tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """Three layers with whiteouts, an opaque directory and a layer without end blocks: skopeo's docker-archive
    (layers as files in `docker save` order) and a registry pull (gzip blobs fetched by digest) give the bank
    the OCI layout gives, byte for byte (tests/host/test_image_sources.py proves it for one layer)."""
    from builder.image import build_image
    from builder.lab.samplerootfs import build_sample_rootfs
    from tests.images import save_as, tar_directory
    from tests.registry import Registry

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)  # the image's creation time makes it reproducible
    board, _, _ = aarch64  # the sample rootfs below them: a bank needs an init
    sample = tar_directory(build_sample_rootfs(board.arch, tmp_path / "rootfs", version="1.0.0"),
                           tmp_path / "sample.tar")
    tars = [sample, write_layer(tmp_path / "base.tar", BASE),
            write_layer(tmp_path / "upper.tar", UPPER, end_blocks=False), write_layer(tmp_path / "top.tar", TOP)]
    layered = oci_image(tmp_path / "oci", "layered", tars)
    banks = {}
    with Registry(tmp_path / "registry") as registry:
        for var, value in registry.env().items():
            monkeypatch.setenv(var, value)
        for kind, source in [("oci", layered), ("docker-archive", str(save_as(layered, "docker-archive",
                                                                              tmp_path / "docker.tar"))),
                             ("registry", registry.push(layered, "bankboot/layered:1"))]:
            m = build_image(None, "1.0.0", tmp_path / f"{kind}.bank", source=source, say=lambda _: None)
            banks[kind] = (m["id"], (tmp_path / f"{kind}.bank").read_bytes())
    assert banks["oci"] == banks["docker-archive"] == banks["registry"]
