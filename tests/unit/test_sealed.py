"""Sealed devices: the persistence policy, the manifest's bounded numbers, the anti-rollback floors that
survive a lost state file, sealed command lines, and the kit that never lives on the banks partition."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builder.image import ImageError, check_persist_paths
from initfs.cmdline import Cmdline
from initfs.options import Options
from initfs.switchroot import _free_initramfs, remove_old_kits
from overlay_layout.layout import LayoutError
from overlay_layout.manifest import check_persist, dump_manifest, parse_manifest
from overlay_layout.policy import GOOD, ImageInfo, Snapshot, plan_boot
from overlay_layout.stage import StageError, stage
from overlay_layout.state import FLOOR_FILE, STATE_FILE, Banks, StateError
from overlay_layout.trust import Policy
from tests.banks import boot, install_first_image, make_bank

DEV = Policy({}, allow_unsigned=True, allow_downgrade=False)
BASE = {"format": 1, "id": "1.0.0-a", "version": "1.0.0", "arch": "amd64", "size": 8192, "sha256": "0" * 64,
        "created": "x"}
VERITY = {"root_hash": "1" * 64, "salt": "ab", "hash_algorithm": "sha256", "data_block_size": 4096,
          "hash_block_size": 4096, "size": 4096, "sha256": "2" * 64}


# -- the persistence policy ---------------------------------------------------------------------------------
def test_persistent_paths_are_normalised_directories_that_shadow_no_code() -> None:
    assert check_persist(["/var", "/etc", "/root/app"], "m") == ["/etc", "/root/app", "/var"]
    for bad, message in [(["/"], "absolute, normalised"), (["etc"], "absolute, normalised"),
                         (["/a/../b"], "absolute, normalised"), (["/a//b"], "absolute, normalised"),
                         (["/usr/local"], "shadow signed code"), (["/sbin"], "shadow signed code"),
                         (["/etc/bankboot/selftest.d"], "shadow signed code"), (["/run"], "shadow signed code"),
                         (["/etc", "/etc/x"], "overlap"), (["/etc", "/etc"], "overlap"), ([], "1 to 32"),
                         ("/etc", "1 to 32"), ([1], "absolute")]:
        with pytest.raises(LayoutError, match=message):
            check_persist(bad, "m")


def test_the_manifest_carries_the_policy_and_bounds_every_number_the_init_uses() -> None:
    m = parse_manifest(dump_manifest({**BASE, "persist": ["/var", "/etc"], "verity": VERITY}), "m")
    assert m["persist"] == ["/etc", "/var"]
    for change, message in [({"persist": ["/lib"]}, "shadow"),
                            ({"size": 8193}, "whole number of 4096-byte verity blocks"),
                            ({"verity": {**VERITY, "data_block_size": 3000}}, "data_block_size"),
                            ({"verity": {**VERITY, "hash_block_size": 1 << 20}}, "hash_block_size"),
                            ({"verity": {**VERITY, "hash_algorithm": "md5"}}, "sha256"),
                            ({"verity": {**VERITY, "root_hash": "1" * 10}}, "64-digit"),
                            ({"verity": {**VERITY, "salt": "abc"}}, "even number"),
                            ({"verity": {**VERITY, "size": 0}}, "positive")]:
        with pytest.raises(LayoutError, match=message):
            parse_manifest(dump_manifest({**BASE, "verity": VERITY, **change}), "m")


def test_bankboot_image_checks_the_policy_against_the_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    for d in ("etc", "var", "opt/app", "sbin"):
        (root / d).mkdir(parents=True)
    (root / "opt/app/init").write_text("#!/bin/sh\n")
    os.symlink("/opt/app/init", root / "sbin/init")
    os.symlink("/var", root / "data")
    assert check_persist_paths(root, ["/var", "/etc"]) == ["/etc", "/var"]
    with pytest.raises(ImageError, match="not a directory in the rootfs"):
        check_persist_paths(root, ["/srv"])
    with pytest.raises(ImageError, match="not a directory in the rootfs"):
        check_persist_paths(root, ["/data"])  # a symlink: the mount would land elsewhere
    with pytest.raises(ImageError, match="init /opt/app/init is inside it"):
        check_persist_paths(root, ["/opt"])


def test_upper_copy_takes_only_the_persistent_paths_of_a_sealed_image(tmp_path: Path) -> None:
    root = tmp_path / "banks"
    root.mkdir()
    install_first_image(root)
    upper = root / "overlay/1.0.0-base/upper"
    for rel in ("etc/app.conf", "var/lib/db", "usr/bin/implant"):
        (upper / rel).parent.mkdir(parents=True, exist_ok=True)
        (upper / rel).write_text(rel)
    banks = Banks(str(root))
    image = make_bank(tmp_path / "u.bank", "2.0.0", b"s" * 5000, persist=["/etc", "/var"])
    stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64")
    copied = sorted(str(p.relative_to(root / f"overlay/{image}/upper")) for p in
                    (root / f"overlay/{image}/upper").rglob("*") if p.is_file())
    assert copied == ["etc/app.conf", "var/lib/db"]


# -- anti-rollback floors -----------------------------------------------------------------------------------
def committed(tmp_path: Path) -> tuple[Banks, str, str]:
    """1.0.0 installed by `bankboot disk`, 2.0.0 staged and committed: (banks, old id, new id)."""
    root = tmp_path / "banks"
    root.mkdir()
    install_first_image(root)
    banks = Banks(str(root))
    banks.install_first("1.0.0-base")
    assert banks.floors(banks.load()) == ("1.0.0", "1.0.0")
    new = make_bank(tmp_path / "u.bank", "2.0.0", b"n" * 5000)
    stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64")
    banks.mark_good(boot(banks).image)
    return banks, "1.0.0-base", new


def test_commit_raises_the_floors_and_previous_stays_bootable(tmp_path: Path) -> None:
    banks, old, new = committed(tmp_path)
    assert banks.floors(banks.load()) == ("2.0.0", "1.0.0")
    assert json.loads((Path(banks.root) / FLOOR_FILE).read_text())["floor"] == "2.0.0"
    assert [c.image for c in plan_boot(banks.snapshot()).candidates] == [new, old]
    banks.rollback()  # previous is reachable, and stays so once it is current again
    assert boot(banks).image == old
    assert [c.image for c in plan_boot(banks.snapshot()).candidates] == [old, new]


def test_a_deleted_or_damaged_state_file_never_lowers_the_floor(tmp_path: Path) -> None:
    banks, _, _ = committed(tmp_path)
    for damage in (None, b"garbage"):
        path = Path(banks.root) / STATE_FILE
        path.unlink() if damage is None else path.write_bytes(damage)
        fresh = Banks(banks.root)
        assert fresh.floors(fresh.load())[0] == "2.0.0"
        make_bank(Path(banks.root).parent / "older.bank", "1.5.0", b"o" * 5000)
        with pytest.raises(StageError, match="below this device's floor 2.0.0"):
            stage(fresh, str(Path(banks.root).parent / "older.bank"), DEV, "9.9.9", machine="x86_64")


def test_current_repointed_below_the_floor_boots_the_rightful_image(tmp_path: Path) -> None:
    banks, old, new = committed(tmp_path)
    ancient = make_bank(tmp_path / "a.bank", "0.5.0", b"a" * 5000)
    st = banks.load()
    stage(Banks(banks.root), str(tmp_path / "a.bank"), Policy({}, True, True), "9.9.9", machine="x86_64",
          allow_downgrade=True)
    banks.mark_bad(None, "test")
    banks.save({**banks.load(), "boot_floor": st["boot_floor"]})  # the downgrade lowered it; undo that
    (Path(banks.root) / FLOOR_FILE).unlink()
    banks.layout.set_pointer("current", ancient)  # someone with the card
    plan = banks.begin_boot()
    assert [c.image for c in plan.candidates] == [new, old]
    assert any("below the anti-rollback floor 1.0.0" in n for n in plan.notes), plan.notes
    assert banks.layout.pointer("current") == new


def test_no_image_below_the_boot_floor_is_ever_a_candidate() -> None:
    infos = {i: ImageInfo(i, GOOD, version=v) for i, v in (("a", "1.0.0"), ("b", "2.0.0"), ("c", "3.0.0"))}
    infos["x"] = ImageInfo("x", None, version=None)  # unreadable version
    plan = plan_boot(Snapshot("a", None, "b", infos, boot_floor="2.0.0"), select="a")
    assert [c.image for c in plan.candidates] == ["c", "b"]
    assert any("selected image a is below" in n for n in plan.notes)
    assert ("repoint_current", "c") in [(e.kind, e.image) for e in plan.effects]


def test_a_damaged_floor_file_is_a_warning_and_state_keeps_the_floor(tmp_path: Path) -> None:
    banks, _, _ = committed(tmp_path)
    (Path(banks.root) / FLOOR_FILE).write_bytes(b"\xff" * 40)
    fresh = Banks(banks.root)
    assert fresh.floors(fresh.load()) == ("2.0.0", "1.0.0")
    assert any("floor.json is damaged" in w for w in fresh.warnings)


# -- sealed builds ------------------------------------------------------------------------------------------
def test_a_sealed_build_ignores_init_step_and_a_rescue_shell_on_the_command_line() -> None:
    line = Cmdline("init=/bin/sh bankboot.step bankboot.rescue=shell bankboot.timeout=5 bankboot.tiemout=1")
    sealed = Options(line, {"bankboot.rescue": "reboot"}, sealed=True)
    assert sealed.get("init") == "/sbin/init" and sealed.get("bankboot.step") is False
    assert sealed.get("bankboot.rescue") == "reboot" and sealed.get("bankboot.timeout") == 5.0
    assert sum("ignored: this is a sealed build" in w for w in sealed.warnings) == 3
    assert any("did you mean bankboot.timeout" in w for w in sealed.warnings)
    dev = Options(line, {"bankboot.rescue": "reboot"})
    assert dev.get("init") == "/bin/sh" and dev.get("bankboot.rescue") == "shell"


def test_kits_on_the_banks_partition_are_removed(tmp_path: Path) -> None:
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    kit = Path(banks.layout.sub("1.0.0-base", "utils")) / "bankboot-evil"
    (kit / "bin").mkdir(parents=True)
    (kit / "init").write_text("#!/bin/sh\n")
    (Path(banks.layout.sub("1.0.0-base", "utils")) / "keep-me").write_text("an image's own tool\n")
    assert remove_old_kits(banks.layout, banks.layout.images()) == [str(kit)]
    assert not kit.exists() and (kit.parent / "keep-me").exists()


def test_switch_root_frees_the_initramfs_but_the_kit(tmp_path: Path) -> None:
    for rel in ("init", "bankboot/lib.so", "lib/ld.so", "lib/modules/x.ko", "etc/bankboot/kit", "bin/sh"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "precious").write_text("not the initramfs's")
    (tmp_path / "lib64").symlink_to("lib")  # links go by their entry's type: never followed
    (tmp_path / "mnt").symlink_to(outside)
    keep = frozenset({"init", "bankboot", "lib/ld.so", "etc/bankboot"})
    _free_initramfs(os.lstat(tmp_path).st_dev, str(tmp_path), frozenset(f"{str(tmp_path).lstrip('/')}/{k}"
                                                                        for k in keep))
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["bankboot/lib.so", "etc/bankboot/kit", "init", "lib/ld.so"]
    assert not (tmp_path / "lib64").is_symlink() and not (tmp_path / "mnt").is_symlink()
    assert (outside / "precious").read_text() == "not the initramfs's"


def test_rollback_to_a_previous_below_the_boot_floor_is_refused(tmp_path: Path) -> None:
    """Two commits: 1.0.0 -> 2.0.0 -> 3.0.0 leaves 2.0.0 previous and the boot floor at 2.0.0; re-pointing
    previous at 1.0.0 (or any older image) makes rollback refuse instead of planning a boot that cannot be."""
    banks, old, _ = committed(tmp_path)
    newer = make_bank(tmp_path / "v.bank", "3.0.0", b"v" * 5000)
    stage(banks, str(tmp_path / "v.bank"), DEV, "9.9.9", machine="x86_64")
    banks.mark_good(boot(banks).image)
    assert banks.floors(banks.load()) == ("3.0.0", "2.0.0") and banks.layout.pointer("current") == newer
    banks.layout.set_pointer("previous", old)
    with pytest.raises(StateError, match="below the anti-rollback floor 2.0.0"):
        banks.rollback()


def test_a_trials_full_check_hashes_exactly_the_signed_size(tmp_path: Path) -> None:
    """The first boot of a trial hashes what dm-verity will map: the signed size, no more, no less."""
    import hashlib

    from initfs.bootflow import BootError, _sha256

    data = os.urandom(10000)
    (tmp_path / "sq").write_bytes(data + b"appended later")
    assert _sha256(str(tmp_path / "sq"), len(data)) == hashlib.sha256(data).hexdigest()
    with pytest.raises(BootError, match="shorter than the 20000 the signed manifest says"):
        _sha256(str(tmp_path / "sq"), 20000)
