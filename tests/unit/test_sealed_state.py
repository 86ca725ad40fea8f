"""Sealed images' state: what a persistent path may allow (nosuid,nodev unless signed otherwise), the two
floor files rebuilt from each other and written back when one is lost, and a sealed build's reboot
message that offers no shell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.image import ImageError, check_persist_paths
from initfs import rescue
from initfs.bootflow import persist_flags
from initfs.syscalls import MS_NODEV, MS_NOSUID
from overlay_layout.layout import LayoutError
from overlay_layout.manifest import check_persist, describe_persist, dump_manifest, parse_manifest, split_persist
from overlay_layout.state import FLOOR_FILE, STATE_FILE, Banks
from tests.banks import install_first_image
from tests.unit.test_sealed import BASE, committed


# -- what a persistent path may allow -----------------------------------------------------------------------
def test_a_persistent_path_is_nosuid_nodev_unless_its_signed_entry_allows_suid_or_dev() -> None:
    assert check_persist(["/var:suid", "/etc", "/srv:suid,dev", "/opt/x:dev"], "m") == \
        ["/etc", "/opt/x:dev", "/srv:dev,suid", "/var:suid"]
    assert [persist_flags(split_persist(e)[1]) for e in ("/etc", "/var:suid", "/x:dev", "/srv:dev,suid")] == \
        [MS_NOSUID | MS_NODEV, MS_NODEV, MS_NOSUID, 0]
    assert describe_persist(["/etc", "/srv:dev,suid", "/var:suid"]) == \
        "/etc (nosuid,nodev) /srv (suid,dev) /var (nodev)"
    for bad, message in [(["/var:"], "comma-separated list of dev and suid"), (["/var:exec"], "dev and suid"),
                         (["/var:suid,suid"], "each once"), (["/var:suid:dev"], "dev and suid"),
                         (["/var", "/var:suid"], "overlap"), (["/usr:suid"], "shadow signed code")]:
        with pytest.raises(LayoutError, match=message):
            check_persist(bad, "m")
    m = parse_manifest(dump_manifest({**BASE, "persist": ["/var:suid", "/etc"]}), "m")  # signed as canonical
    assert m["persist"] == ["/etc", "/var:suid"]


def test_bankboot_image_checks_each_path_of_an_entry_and_its_parents(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    for d in ("var", "srv/data", "sbin", "real/app"):
        (root / d).mkdir(parents=True)
    (root / "sbin/init").write_text("#!/bin/sh\n")
    (root / "link").symlink_to("real")
    assert check_persist_paths(root, ["/var:suid", "/srv/data:dev"]) == ["/srv/data:dev", "/var:suid"]
    with pytest.raises(ImageError, match="not a directory in the rootfs"):
        check_persist_paths(root, ["/link/app"])  # a symlink on the way: the init would refuse it


# -- the floor files back each other up ----------------------------------------------------------------------
def test_a_deleted_state_file_is_rebuilt_and_written_back_so_floor_json_can_go_later(tmp_path: Path) -> None:
    banks, _, new = committed(tmp_path)
    root = Path(banks.root)
    (root / STATE_FILE).unlink()
    fresh = Banks(banks.root)
    fresh.begin_boot()
    assert any(f"{STATE_FILE} is missing" in w for w in fresh.warnings)
    written = json.loads((root / STATE_FILE).read_text())
    assert (written["floor"], written["boot_floor"]) == ("2.0.0", "1.0.0")
    assert written["images"][new]["state"] == "good"
    (root / FLOOR_FILE).unlink()  # a boot later, the other file
    later = Banks(banks.root)
    assert later.floors(later.load()) == ("2.0.0", "1.0.0")
    later.begin_boot()
    assert any(f"{FLOOR_FILE} is missing" in w for w in later.warnings)
    kept = json.loads((root / FLOOR_FILE).read_text())
    assert (kept["floor"], kept["boot_floor"]) == ("2.0.0", "1.0.0")
    again = Banks(banks.root)
    again.begin_boot()
    assert again.warnings == []  # both sound again


def test_a_damaged_floor_file_is_rewritten_at_boot(tmp_path: Path) -> None:
    banks, _, _ = committed(tmp_path)
    (Path(banks.root) / FLOOR_FILE).write_bytes(b"\xff" * 40)
    fresh = Banks(banks.root)
    fresh.begin_boot()
    assert json.loads((Path(banks.root) / FLOOR_FILE).read_text())["floor"] == "2.0.0"


def test_an_empty_partition_has_no_state_file_and_that_is_no_damage(tmp_path: Path) -> None:
    banks = Banks(str(tmp_path))
    assert banks.load()["images"] == {} and banks.floors(banks.load()) == (None, None)
    banks.begin_boot()
    assert banks.warnings == [] and not (tmp_path / STATE_FILE).exists()


def test_a_disk_that_lost_both_files_says_the_floors_come_from_the_images_alone(tmp_path: Path) -> None:
    install_first_image(tmp_path)  # an image, and neither floor file
    banks = Banks(str(tmp_path))
    banks.begin_boot()
    assert any(STATE_FILE in w for w in banks.warnings) and any(FLOOR_FILE in w for w in banks.warnings)
    assert json.loads((tmp_path / FLOOR_FILE).read_text())["floor"] == "1.0.0"
    assert (tmp_path / STATE_FILE).exists()


# -- a sealed build's reboot offers no shell ----------------------------------------------------------------
@pytest.mark.parametrize("sealed", [True, False])
def test_the_reboot_message_offers_a_shell_only_where_there_is_one(monkeypatch, sealed: bool) -> None:
    said: list[str] = []

    def reboot_now(reason: str, delay: float = 0.0) -> None:
        said.append(reason)
        raise SystemExit

    monkeypatch.setattr(rescue, "reboot_now", reboot_now)
    monkeypatch.setattr(rescue, "_sealed", lambda: sealed)
    monkeypatch.setattr("initfs.menu.stop_listening", lambda: None)
    with pytest.raises(SystemExit):
        rescue.give_up("nothing", [], "reboot")
    assert said[0].startswith("nothing could be booted; rebooting")
    assert ("bankboot.rescue=shell gives a shell instead" in said[0]) is not sealed
