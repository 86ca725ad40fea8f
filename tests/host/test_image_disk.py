"""`bankboot image` and `bankboot disk`, inspected with unsquashfs, sfdisk, debugfs and mtools."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.disk import DiskError, boot_fat, build_disk, mtools_env, partitions, read_boot_files
from builder.image import ImageError, build_image, read_bank
from builder.lab.samplerootfs import build_sample_rootfs
from tests.fixtures import Bank


@pytest.fixture(scope="module")
def rootfs(aarch64, tmp_path_factory) -> Path:
    board, _, _ = aarch64
    return build_sample_rootfs(board.arch, tmp_path_factory.mktemp("img") / "rootfs", version="2.0.0")


@pytest.fixture(scope="module")
def bank(rootfs: Path, signing_key) -> Bank:
    """Signed by the test suite's key, which the test initramfs trusts."""
    out = rootfs.parent / "app.bank"
    return Bank(out, build_image(rootfs, "2.0.0", out, sign_key=signing_key.private))


def test_image_records_arch_size_and_hash_and_is_reproducible(rootfs: Path, bank, signing_key) -> None:
    path, m = bank.path, bank.manifest
    assert m["arch"] == "arm64" and m["version"] == "2.0.0" and m["id"].startswith("2.0.0-")
    with tarfile.open(path) as tar:
        assert tar.getnames() == ["manifest.json", "rootfs.squashfs", "rootfs.verity", "rootfs.chunks"]
        index = tar.extractfile("rootfs.chunks").read()
    assert len(index) == m["chunks"]["size"] and m["chunks"]["count"] >= 1
    assert m["verity"]["size"] > 0 and len(m["verity"]["root_hash"]) == 64
    again = build_image(rootfs, "2.0.0", rootfs.parent / "again.bank", sign_key=signing_key.private)
    assert again == m  # ed25519 signatures are deterministic too
    assert (rootfs.parent / "again.bank").read_bytes() == path.read_bytes()
    with read_bank(path) as opened:
        assert opened.members["rootfs.squashfs"].size == m["size"]


def test_squashfs_has_the_rootfs_owned_by_root(bank, tmp_path: Path) -> None:
    path = bank.path
    with tarfile.open(path) as tar:
        tar.extract("rootfs.squashfs", tmp_path, filter="data")
    listing = subprocess.run(["unsquashfs", "-lln", str(tmp_path / "rootfs.squashfs")], capture_output=True,
                             text=True, check=True).stdout
    assert "squashfs-root/sbin/init -> ../bin/busybox" in listing
    assert "squashfs-root/etc/init.d/rcS" in listing
    for line in listing.splitlines():
        if line.startswith(("-", "d", "l")):
            assert line.split()[1] == "0/0", line


def test_image_without_init_or_of_unknown_arch_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r/sbin").mkdir(parents=True)
    with pytest.raises(ImageError, match="has no /sbin/init"):
        build_image(tmp_path / "r", "1.0.0", tmp_path / "x.bank")
    (tmp_path / "r/sbin/init").write_text("#!/bin/sh\n")
    with pytest.raises(ImageError, match="has no /bin/sh .*the interpreter of /sbin/init"):
        build_image(tmp_path / "r", "1.0.0", tmp_path / "x.bank")
    (tmp_path / "r/bin").mkdir()
    (tmp_path / "r/bin/sh").write_text("not a program\n")
    with pytest.raises(ImageError, match="/bin/sh is not an ELF program.*give --arch"):
        build_image(tmp_path / "r", "1.0.0", tmp_path / "x.bank")
    with pytest.raises(ImageError, match="--arch 'sparc' is not one of amd64, arm64, armhf"):
        build_image(tmp_path / "r", "1.0.0", tmp_path / "x.bank", arch="sparc")
    assert not (tmp_path / "x.bank").exists()


def test_a_script_init_is_followed_to_its_interpreter_inside_the_rootfs(rootfs: Path, tmp_path: Path) -> None:
    """An init that is a shell script (#!/bin/sh, the busybox in the rootfs): its architecture is the
    interpreter's, found inside the rootfs as the kernel would; --arch overrides."""
    import shutil

    from builder.image import rootfs_arch

    rootfs = shutil.copytree(rootfs, tmp_path / "rootfs", symlinks=True)  # the fixture is shared
    (rootfs / "sbin/init").unlink()
    (rootfs / "sbin/init").write_text("#!/bin/sh -e\nexec /bin/busybox init\n")
    (rootfs / "sbin/init").chmod(0o755)
    arch = rootfs_arch(rootfs)
    assert arch == build_image(rootfs, "1.0.0", tmp_path / "s.bank", arch=arch)["arch"]
    (rootfs / "sbin/loop").write_text("#!/sbin/loop\n")
    (rootfs / "sbin/init").write_text("#!/sbin/loop\n")
    with pytest.raises(ImageError, match="nest too deep"):
        rootfs_arch(rootfs)


def test_tampered_bank_is_refused(bank, tmp_path: Path) -> None:
    path = bank.path
    data = bytearray(path.read_bytes())
    data[512] = ord("X")  # the opening brace of manifest.json
    (tmp_path / "bad.bank").write_bytes(bytes(data))
    with pytest.raises(Exception, match="manifest|JSON|bank"):
        read_bank(tmp_path / "bad.bank")


def test_disk_has_boot_banks_and_userdata(aarch64, bank, built_initramfs, tmp_path: Path) -> None:
    board, _, _ = aarch64
    path, m = bank.path, bank.manifest
    disk = tmp_path / "disk.img"
    layout, _ = build_disk(board, path, disk, 256 << 20, built_initramfs(board))
    table = json.loads(subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert table["label"] == "dos" and int(table["id"], 16) == layout.disk_id
    parts = partitions(disk)
    assert [p["type"] for p in parts] == ["c", "83", "83"]
    # boot partition: what firmware needs
    listing = subprocess.run(["mdir", "-b", "-i", boot_fat(disk), "::"], capture_output=True, text=True,
                             check=True, env=mtools_env()).stdout
    assert {"::/VMLINUZ", "::/INITRAMFS.IMG", "::/CMDLINE.TXT"} <= {x.upper() for x in listing.split()}
    _kernel, initrd, cmdline = read_boot_files(disk, tmp_path)
    assert initrd.read_bytes() == built_initramfs(board).read_bytes()
    assert f"root=PARTUUID={layout.partuuid(2)}" in cmdline and board.cmdline in cmdline
    # banks partition: the layout with current -> the image
    banks = tmp_path / "banks.ext4"
    with open(disk, "rb") as src, open(banks, "wb") as dst:
        src.seek(parts[1]["start"] * 512)
        dst.write(src.read(parts[1]["size"] * 512))
    def debugfs(cmd: str) -> str:
        return subprocess.run(["debugfs", "-R", cmd, str(banks)], capture_output=True, text=True, check=True).stdout
    assert debugfs("stat overlay/current").count(f'Fast link dest: "{m["id"]}"') == 1
    names = debugfs(f"ls -l overlay/{m['id']}")
    for name in ("rootfs.squashfs", "manifest.json", "upper", "work", "backups", "utils"):
        assert name in names
    assert subprocess.run(["dumpe2fs", "-h", str(banks)], capture_output=True, text=True,
                          check=True).stdout.count("bankboot-banks") == 1


def test_disk_refuses_an_image_of_another_arch(x86_64, bank, tmp_path: Path) -> None:
    board, _, _ = x86_64
    path = bank.path
    with pytest.raises(Exception, match="arm64 image; board qemu-x86_64 is amd64"):
        build_disk(board, path, tmp_path / "d.img", 256 << 20, path)
    assert not (tmp_path / "d.img").exists()


def test_disk_refuses_an_image_its_initramfs_would_refuse_at_boot(aarch64, rootfs: Path, built_initramfs,
                                                                 tmp_path: Path) -> None:
    """Unsigned, or signed by a key the initramfs does not trust: such a disk's first boot could only end in
    the rescue policy, so it is not written."""
    from builder.keys import keygen

    board, _, _ = aarch64
    keygen(tmp_path / "other", "not trusted")
    build_image(rootfs, "2.0.0", tmp_path / "u.bank")
    build_image(rootfs, "2.0.0", tmp_path / "o.bank", sign_key=tmp_path / "other.key")
    for name, message in [("u.bank", "is not signed"), ("o.bank", "which this device does not trust")]:
        with pytest.raises(DiskError, match=f"would refuse .*{name} at boot: .*{message}"):
            build_disk(board, tmp_path / name, tmp_path / "d.img", 256 << 20, built_initramfs(board))
        assert not (tmp_path / "d.img").exists()


def test_inspect_reports_the_signer_and_verifies_like_the_device(bank, built_initramfs, aarch64, signing_key,
                                                                tmp_path: Path) -> None:
    from builder.inspect import inspect_bank
    from builder.keys import keygen

    board, _, _ = aarch64
    path, m = bank.path, bank.manifest
    good = inspect_bank(path, (signing_key.public,))
    assert good["ok"] and good["files_ok"] and good["signed"] == f"key {m['signatures'][0]['key']}"
    assert "yes: signed by" in good["verdict"]
    assert inspect_bank(path, (), built_initramfs(board))["ok"]
    keygen(tmp_path / "other", "not trusted")
    wrong = inspect_bank(path, (tmp_path / "other.pub",))
    assert not wrong["ok"] and "does not trust" in wrong["verdict"]
    data = bytearray(path.read_bytes())
    data[-4096 * 3] ^= 1  # inside the hash tree, behind the manifest
    (tmp_path / "changed.bank").write_bytes(bytes(data))
    changed = inspect_bank(tmp_path / "changed.bank", (signing_key.public,))
    assert not changed["ok"] and not changed["files_ok"] and "does NOT match" in changed["verdict"]


def test_inspect_reads_a_disk_offline_against_its_own_initramfs(aarch64, bank, built_initramfs, signing_key,
                                                                 tmp_path: Path) -> None:
    import random

    from builder import bankspart
    from builder.inspect import inspect_file
    from builder.lab import faultdisk

    board, _, _ = aarch64
    path, m = bank.path, bank.manifest
    disk = tmp_path / "disk.img"
    build_disk(board, path, disk, 256 << 20, built_initramfs(board))
    report = inspect_file(disk)
    assert report["kind"] == "disk" and report["ok"] and report["pointers"]["current"] == m["id"]
    (entry,) = report["images"]
    assert entry["files_ok"] and entry["state"] == "good" and entry["verdict"] == "yes: its initramfs would boot it"
    keygen_prefix = tmp_path / "other"
    from builder.keys import keygen

    keygen(keygen_prefix, "not trusted")
    assert not inspect_file(disk, (tmp_path / "other.pub",))["ok"]
    with bankspart.banks_partition(disk) as part:  # someone changes the image on the card
        faultdisk.overwrite_middle(part, f"overlay/{m['id']}/rootfs.squashfs", 4096, random.Random(1))
    damaged = inspect_file(disk)
    assert not damaged["ok"] and not damaged["images"][0]["files_ok"]
    assert "does NOT match" in damaged["images"][0]["verdict"]
