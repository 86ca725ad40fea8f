"""`bankboot disk --firmware uboot|uefi`: what each firmware will read on the boot FAT, inspected with mtools,
sfdisk and u-boot-tools (booting it is tests/vm/test_firmware.py)."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest

from builder.board import BoardError, load_board, parse_board
from builder.disk import DiskError, boot_fat, build_disk, mtools_env, partitions
from builder.firmware import firmware_of, qemu_args
from builder.image import build_image
from builder.lab.samplerootfs import build_sample_rootfs

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def bank(aarch64, signing_key, tmp_path_factory) -> Path:
    rootfs = build_sample_rootfs(aarch64.board.arch, tmp_path_factory.mktemp("fw") / "rootfs", version="1.0.0")
    out = rootfs.parent / "app.bank"
    build_image(rootfs, "1.0.0", out, sign_key=signing_key.private)
    return out


def _read(disk: Path, name: str) -> bytes:
    return subprocess.run(["mtype", "-i", boot_fat(disk), f"::{name}"], env=mtools_env(), check=True,
                          capture_output=True).stdout


def test_uboot_disk_has_the_script_two_slot_layout_and_crcs(aarch64, built_initramfs, bank: Path,
                                                            tmp_path: Path) -> None:
    board, kernel, _ = aarch64
    initrd = built_initramfs(board)
    disk = tmp_path / "disk.img"
    build_disk(board, bank, disk, 384 << 20, initrd, firmware="uboot")
    assert firmware_of(disk) == "uboot" and partitions(disk)[0]["type"] == "c"
    script = tmp_path / "boot.scr"
    script.write_bytes(_read(disk, "boot.scr"))
    listing = subprocess.run(["mkimage", "-l", str(script)], capture_output=True, text=True, check=True).stdout
    assert "ARM Linux Script" in listing and "bankboot loader A/B" in listing and "1970" in listing
    for name, src in (("vmlinuz", kernel.image), ("initrd.img", initrd)):
        data = _read(disk, f"a/{name}")
        assert data == src.read_bytes()
        crc = zlib.crc32(data)
        assert _read(disk, f"a/{name}.crc32") == crc.to_bytes(4, "big") + crc.to_bytes(4, "little")
    env = _read(disk, "a/cmdline.env").decode()
    assert env.startswith("bb_args=console=ttyAMA0 panic=-1 root=PARTUUID=") and "rootwait" in env
    assert _read(disk, "loader/good.env") == b"bb_good=a\n"
    assert b"i6300esb" in _read(disk, "loader/board.env")  # the board's watchdog recipe
    with pytest.raises(subprocess.CalledProcessError):
        _read(disk, "loader/try.env")  # nothing on trial
    args = qemu_args("uboot", "arm64", disk)
    assert args[:2] == ["-bios", "/usr/lib/u-boot/qemu_arm64/u-boot.bin"]
    flash = disk.with_name(disk.name + ".uboot-env")
    assert flash.stat().st_size == 64 << 20
    env_block = flash.read_bytes()[:0x40000]
    assert int.from_bytes(env_block[:4], "little") == zlib.crc32(env_block[4:])  # U-Boot accepts it
    assert b"bootdelay=0\0" in env_block and b"boot_targets=virtio0\0" in env_block
    # bankboot inspect checks the image against the committed loader slot's initramfs
    from builder.inspect import inspect_file

    assert inspect_file(disk, (), None)["ok"]
    with pytest.raises(ValueError, match="reads its command line from the disk"):
        from builder.lab.boot import firmware_args
        firmware_args(board, disk, "bankboot.debug")


def test_uefi_disk_has_an_esp_with_systemd_boot_and_one_entry(aarch64, built_initramfs, bank: Path,
                                                              tmp_path: Path) -> None:
    board = load_board("qemu-aarch64-uefi")
    disk = tmp_path / "disk.img"
    build_disk(board, bank, disk, 384 << 20, built_initramfs(aarch64.board), firmware="uefi")
    assert firmware_of(disk) == "uefi" and partitions(disk)[0]["type"] == "ef"
    assert _read(disk, "EFI/BOOT/BOOTAA64.EFI")[:2] == b"MZ"  # a PE program: systemd-boot
    assert _read(disk, "loader/loader.conf").decode().startswith("timeout 0\neditor no\n")
    entry = _read(disk, "loader/entries/bankboot-1-a.conf").decode()
    assert "linux /a/vmlinuz\ninitrd /a/initrd.img\n" in entry and "bankboot.loader_slot=a" in entry
    assert "+" not in entry
    from builder.inspect import inspect_file

    assert inspect_file(disk, (), None)["ok"]
    args = qemu_args("uefi", "arm64", disk)
    assert "-bios" not in args and any("AAVMF_CODE.fd" in a for a in args)
    template = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
    assert disk.with_name(disk.name + ".efivars").read_bytes() == template.read_bytes()  # this device's own copy


def test_firmware_is_checked_in_the_board_file_and_on_the_command_line(aarch64, built_initramfs, bank: Path,
                                                                       tmp_path: Path) -> None:
    board = aarch64.board
    assert board.firmware == "uboot" and load_board("qemu-x86_64").firmware == "uefi"
    assert load_board("raspberrypi3").firmware == "direct"
    with pytest.raises(BoardError, match="boot.firmware 'grub' must be one of direct, uboot, uefi"):
        parse_board("x", Path("x.toml"), {"arch": "arm64", "kernel": {"package": "p"}, "boot": {
            "console": "c", "firmware": "grub"}, "qemu": {"system": "s", "args": [], "disk": []}})
    with pytest.raises(DiskError, match="firmware 'bios' is not one of"):
        build_disk(board, bank, tmp_path / "d.img", 384 << 20, built_initramfs(board), firmware="bios")
    with pytest.raises(RuntimeError, match="no uefi firmware for armhf"):
        from builder.firmware import firmware_for
        firmware_for("uefi", "armhf")


def test_bankboot_disk_with_defaults_has_room_for_a_second_loader(aarch64, built_initramfs, bank: Path,
                                                                  tmp_path: Path, capsys) -> None:
    """`bankboot disk` as `make demo` runs it (no --boot-size, the board's firmware): the boot FAT has room for
    a second loader slot as large as the first with half again to spare, so `bankctl install-loader` of an
    image carrying the same kernel (or a release larger) fits. 64 MiB did not hold two of Debian's arm64 pair."""
    from builder.cli import main

    board, kernel, _ = aarch64
    initrd = built_initramfs(board)
    disk = tmp_path / "disk.img"
    assert main(["disk", "--board", board.name, "--image", str(bank), "--initramfs", str(initrd),
                 "-o", str(disk)]) == 0
    assert "boot partition 128 MiB" in capsys.readouterr().out
    assert firmware_of(disk) == board.firmware == "uboot"
    listing = subprocess.run(["mdir", "-i", boot_fat(disk), "::/"], env=mtools_env(), check=True, capture_output=True,
                             text=True).stdout
    line = next(x for x in listing.splitlines() if "bytes free" in x)  # "   85 356 544 bytes free"
    free = int("".join(c for c in line.split("bytes free")[0] if c.isdigit()))
    pair = kernel.image.stat().st_size + initrd.stat().st_size
    assert free >= pair * 3 // 2, listing
