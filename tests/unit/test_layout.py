"""overlay_layout on temp dirs: good and bad trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from overlay_layout import durable
from overlay_layout.layout import Layout, LayoutError, check_id
from overlay_layout.manifest import dump_manifest, parse_manifest

GOOD = {"format": 1, "id": "1.0.0-abc", "version": "1.0.0", "arch": "arm64", "size": 4096, "sha256": "a" * 64,
        "created": "1970-01-01T00:00:00Z"}


def make_image(root: Path, image_id: str, squashfs: bytes = b"hsqs" + b"\0" * 60) -> Layout:
    lay = Layout(str(root))
    os.makedirs(lay.image_dir(image_id), exist_ok=True)
    Path(lay.squashfs(image_id)).write_bytes(squashfs)
    lay.prepare_image_dirs(image_id)
    return lay


def test_pointer_round_trip_and_images(tmp_path: Path) -> None:
    lay = make_image(tmp_path, "a-1")
    make_image(tmp_path, "b-2")
    lay.set_pointer("current", "a-1")
    lay.set_pointer("next", "b-2")
    assert os.readlink(tmp_path / "overlay/current") == "a-1"
    assert lay.pointer("current") == "a-1" and lay.pointer("next") == "b-2" and lay.pointer("previous") is None
    assert lay.images() == ["a-1", "b-2"]
    lay.set_pointer("next", None)
    assert lay.pointer("next") is None
    lay.check_image("a-1")
    for d in ("upper", "work", "backups", "utils"):
        assert (tmp_path / "overlay/a-1" / d).is_dir()


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "current", "x" * 200, "a b", "a..b"])
def test_unsafe_ids_are_refused(bad: str) -> None:
    with pytest.raises(LayoutError, match="invalid image id"):
        check_id(bad)


@pytest.mark.parametrize("target, message", [
    ("/overlay/a-1", "must be relative"),
    ("../a-1", "inside"),
    ("a-1/../../etc", "inside"),
    ("..", "inside"),
    ("bad id", "invalid image id"),
])
def test_bad_pointer_symlinks_are_named(tmp_path: Path, target: str, message: str) -> None:
    lay = make_image(tmp_path, "a-1")
    os.symlink(target, tmp_path / "overlay/current")
    with pytest.raises(LayoutError, match=message) as e:
        lay.pointer("current")
    assert "overlay/current" in str(e.value)


def test_pointer_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    lay = make_image(tmp_path, "a-1")
    (tmp_path / "overlay/current").write_text("a-1")
    with pytest.raises(LayoutError, match="is not a symlink"):
        lay.pointer("current")


def test_pointer_to_a_missing_image_is_refused(tmp_path: Path) -> None:
    lay = make_image(tmp_path, "a-1")
    with pytest.raises(LayoutError, match="does not exist"):
        lay.set_pointer("current", "b-2")
    assert lay.pointer("current") is None


def test_missing_or_garbage_squashfs_is_named(tmp_path: Path) -> None:
    lay = make_image(tmp_path, "a-1", squashfs=b"garbage!")
    with pytest.raises(LayoutError, match=r"overlay/a-1/rootfs.squashfs is not a squashfs"):
        lay.check_image("a-1")
    os.unlink(lay.squashfs("a-1"))
    with pytest.raises(LayoutError, match=r"rootfs.squashfs is missing"):
        lay.check_image("a-1")


def test_manifest_round_trip_and_garbage() -> None:
    assert parse_manifest(dump_manifest(GOOD), "m") == GOOD
    with pytest.raises(LayoutError, match="not valid JSON"):
        parse_manifest(b"{nope", "m.json")
    with pytest.raises(LayoutError, match="'size' must be a int"):
        parse_manifest(dump_manifest({**GOOD, "size": "big"}), "m")
    with pytest.raises(LayoutError, match="sha256"):
        parse_manifest(dump_manifest({**GOOD, "sha256": "XYZ"}), "m")
    with pytest.raises(LayoutError, match="invalid image id"):
        parse_manifest(dump_manifest({**GOOD, "id": "../x"}), "m")
    with pytest.raises(LayoutError, match="format"):
        parse_manifest(dump_manifest({**GOOD, "format": 9}), "m")


def test_durable_write_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    f = tmp_path / "state"
    durable.write_file(str(f), b"one")
    durable.write_file(str(f), b"two")
    assert f.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["state"]
    durable.set_symlink(str(tmp_path / "link"), "state")
    durable.set_symlink(str(tmp_path / "link"), "other")
    assert os.readlink(tmp_path / "link") == "other"
    assert sorted(os.listdir(tmp_path)) == ["link", "state"]
