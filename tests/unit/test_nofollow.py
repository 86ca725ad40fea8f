"""Planted symlinks on the banks partition: every directory the init makes, cleans or mounts is reached
without following one (a planted link is replaced by an empty directory and reported, its target left
alone), image directories and files that are links are refused, and bankctl never copies through one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from initfs.switchroot import remove_old_kits
from overlay_layout.layout import Layout, LayoutError
from overlay_layout.nofollow import check_dirs, ensure_dirs, same_dir, sync_walked
from overlay_layout.stage import stage
from overlay_layout.state import Banks
from tests.banks import DEV, install_first_image, make_bank

IMAGE = "1.0.0-base"


def decoy(root: Path, name: str = "decoy") -> Path:
    d = root / name
    d.mkdir()
    (d / "keep").write_text("not the image's\n")
    return d


def test_missing_directories_are_made_and_links_at_every_level_replaced(tmp_path: Path) -> None:
    target = decoy(tmp_path)
    (tmp_path / "a").mkdir()
    os.symlink("../decoy", tmp_path / "a/b")  # relative
    replaced: list[str] = []
    ident = ensure_dirs(str(tmp_path), "a/b/c", replaced)
    assert (tmp_path / "a/b/c").is_dir() and not (tmp_path / "a/b").is_symlink()
    assert sorted(os.listdir(target)) == ["keep"] and len(replaced) == 1
    assert "a/b was a symlink to ../decoy" in replaced[0]
    assert same_dir(str(tmp_path / "a/b/c"), ident)
    os.rmdir(tmp_path / "a/b/c")
    os.symlink(str(target), tmp_path / "a/b/c")  # absolute, at the last level
    replaced = []
    ensure_dirs(str(tmp_path), "a/b/c", replaced)
    assert not (tmp_path / "a/b/c").is_symlink() and len(replaced) == 1 and os.listdir(target) == ["keep"]
    assert ensure_dirs(str(tmp_path), "a/b/c", replaced) and len(replaced) == 1  # nothing left to replace
    assert not same_dir(str(tmp_path / "a"), ident)


def test_what_is_not_ours_to_replace_is_an_error_naming_it(tmp_path: Path) -> None:
    decoy(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="file is not a directory") as e:
        ensure_dirs(str(tmp_path), "file/x", [])
    assert e.value.errno == errno.ENOTDIR
    os.symlink("decoy", tmp_path / "link")
    with pytest.raises(OSError, match="link is a symlink \\(to decoy\\)"):
        check_dirs(str(tmp_path), "link")
    with pytest.raises(OSError, match="does not exist"):
        check_dirs(str(tmp_path), "nothing/here")
    with pytest.raises(ValueError):
        ensure_dirs(str(tmp_path), "a/../b", [])
    assert (tmp_path / "link").is_symlink()  # check_dirs changes nothing


def test_an_image_directory_or_file_that_is_a_link_is_refused_never_replaced(tmp_path: Path) -> None:
    install_first_image(tmp_path, "2.0.0-real")
    lay = Layout(str(tmp_path))
    os.symlink("2.0.0-real", tmp_path / "overlay" / IMAGE)
    with pytest.raises(LayoutError, match=f"overlay/{IMAGE} is a symlink"):
        lay.check_image(IMAGE)
    with pytest.raises(OSError, match="is a symlink"):
        lay.ensure_sub(IMAGE, "upper", [])
    assert (tmp_path / "overlay" / IMAGE).is_symlink()
    sq = Path(lay.squashfs("2.0.0-real"))
    os.rename(sq, tmp_path / "elsewhere.squashfs")
    os.symlink(tmp_path / "elsewhere.squashfs", sq)
    with pytest.raises(LayoutError, match="rootfs.squashfs is not a regular file \\(a symlink\\)"):
        lay.check_image("2.0.0-real")
    os.unlink(sq)
    os.rename(tmp_path / "elsewhere.squashfs", sq)
    os.mkfifo(lay.manifest_path("2.0.0-real") + ".fifo")
    os.replace(lay.manifest_path("2.0.0-real") + ".fifo", lay.manifest_path("2.0.0-real"))
    with pytest.raises(LayoutError, match="manifest.json is not a regular file \\(a special file\\)"):
        lay.check_image("2.0.0-real")  # a FIFO would hang the boot when opened


def test_a_reset_never_follows_a_linked_backups_directory(tmp_path: Path) -> None:
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    target = decoy(tmp_path)
    (target / "upper-20000101T000000").mkdir()  # what a reset would remove from backups/
    backups = Path(banks.layout.sub(IMAGE, "backups"))
    os.rmdir(backups)
    os.symlink("/" + str(target).lstrip("/"), backups)
    (Path(banks.layout.sub(IMAGE, "upper")) / "data").write_text("old changes\n")
    banks.request_reset(IMAGE, keep_backup=False)
    assert banks.apply_reset(IMAGE) == "reset: upper emptied"
    assert sorted(os.listdir(target)) == ["keep", "upper-20000101T000000"]  # untouched
    assert backups.is_dir() and not backups.is_symlink() and os.listdir(backups) == []
    assert os.listdir(banks.layout.sub(IMAGE, "upper")) == []
    assert any("backups was a symlink to" in w for w in banks.warnings)


def test_a_linked_utils_directory_is_replaced_and_the_kits_it_points_at_kept(tmp_path: Path) -> None:
    install_first_image(tmp_path)
    lay = Layout(str(tmp_path))
    target = decoy(tmp_path)
    (target / "bankboot-image").mkdir()  # looks like an old kit, is not ours
    os.rmdir(lay.sub(IMAGE, "utils"))
    os.symlink(str(target), lay.sub(IMAGE, "utils"))
    replaced: list[str] = []
    assert remove_old_kits(lay, lay.images(), replaced) == []
    assert sorted(os.listdir(target)) == ["bankboot-image", "keep"] and "utils was a symlink" in replaced[0]
    assert os.path.isdir(lay.sub(IMAGE, "utils")) and not os.path.islink(lay.sub(IMAGE, "utils"))


def test_the_userdata_directory_replaces_a_link(tmp_path: Path) -> None:
    lay = Layout(str(tmp_path))
    os.makedirs(lay.overlay)
    os.symlink("overlay", lay.userdata_dir())
    replaced: list[str] = []
    path, ident = lay.ensure_userdata_dir(replaced)
    assert path == lay.userdata_dir() and not os.path.islink(path) and same_dir(path, ident)
    assert "userdata was a symlink to overlay" in replaced[0]


def test_upper_copy_never_copies_through_a_planted_link(tmp_path: Path) -> None:
    root = tmp_path / "banks"
    root.mkdir()
    install_first_image(root)
    target = decoy(root)
    upper = root / f"overlay/{IMAGE}/upper"
    (upper / "etc").mkdir()
    (upper / "etc/app.conf").write_text("mine\n")
    os.symlink(str(target), upper / "var")
    image = make_bank(tmp_path / "u.bank", "2.0.0", b"s" * 5000, persist=["/etc", "/var"])
    stage(Banks(str(root)), str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64")
    new = root / f"overlay/{image}/upper"
    assert sorted(str(p.relative_to(new)) for p in new.rglob("*")) == ["etc", "etc/app.conf"]


def test_a_walk_that_changes_anything_flushes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The directories (and a link replaced) of one walk are made durable by one syncfs of the filesystem, not
    an fsync per parent; a walk that finds everything in place flushes nothing."""
    from overlay_layout.native import api

    calls: list[str] = []
    real_syncfs = api.syncfs
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(api, "syncfs", lambda fd: calls.append("syncfs") or real_syncfs(fd))
    decoy(tmp_path)
    ensure_dirs(str(tmp_path), "a/b/c/d", [])
    assert calls == ["syncfs"] and (tmp_path / "a/b/c/d").is_dir()
    os.rmdir(tmp_path / "a/b/c/d")
    os.symlink("../../../decoy", tmp_path / "a/b/c/d")
    ensure_dirs(str(tmp_path), "a/b/c/d/e", [])
    assert calls == ["syncfs"] * 2 and not (tmp_path / "a/b/c/d").is_symlink()
    ensure_dirs(str(tmp_path), "a/b/c/d/e", [])
    check_dirs(str(tmp_path), "a/b/c/d/e")
    assert calls == ["syncfs"] * 2


def test_walks_batched_by_their_caller_flush_once_for_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sealed image's persistent paths: every walk given `unsynced` leaves its syncfs to the caller, and
    sync_walked makes them all durable with one syncfs per filesystem; walks that change nothing add none."""
    from overlay_layout.native import api

    calls: list[str] = []
    real_syncfs = api.syncfs
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(api, "syncfs", lambda fd: calls.append("syncfs") or real_syncfs(fd))
    unsynced: list[str] = []
    for rel in ("upper/etc", "work/etc", "upper/var", "work/var"):
        ensure_dirs(str(tmp_path), rel, [], unsynced=unsynced)
    assert calls == [] and all((tmp_path / rel).is_dir() for rel in ("upper/etc", "work/var"))
    sync_walked(unsynced)
    assert calls == ["syncfs"] and unsynced == []
    ensure_dirs(str(tmp_path), "upper/etc", [], unsynced=unsynced)
    sync_walked(unsynced)
    assert calls == ["syncfs"]


def test_a_failed_syncfs_is_an_error_naming_the_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from overlay_layout.native import api

    monkeypatch.setattr(api, "syncfs", lambda fd: errno.EIO)
    with pytest.raises(OSError, match=f"syncfs {tmp_path}: Input/output error"):
        ensure_dirs(str(tmp_path), "a", [])
