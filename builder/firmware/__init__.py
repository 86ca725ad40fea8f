"""The firmware a board boots through, and what `bankboot disk` writes for it on the boot FAT.

    direct  no firmware: QEMU's -kernel/-initrd play its part (builder/lab/boot.py reads the boot partition)
    uboot   U-Boot's distro boot runs /boot.scr (boot.cmd here): two loader slots /a and /b, a try counter in
            /loader/try.env that U-Boot decrements before each attempt, CRC-32 checks of each slot's files
    uefi    UEFI firmware (AAVMF, OVMF) starts systemd-boot from /EFI/BOOT; one type #1 entry per loader slot,
            the one on trial with systemd-boot's boot counter in its name (`+3`)

The device side of the same layout (install, blessing, status) is initfs/loaderab.py; the file names both
sides use are in overlay_layout/contract.py. Why each design (Debian 12's U-Boot has no bootcount and cannot
save its environment on QEMU's flash; systemd-boot cannot count under U-Boot's EFI): docs/firmware.md."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from builder.errors import BuildError
from builder.run import run
from overlay_layout.contract import (
    LOADER_DIR,
    LOADER_ENTRIES,
    LOADER_GOOD,
    LOADER_SLOTS,
    SLOT_CMDLINE,
    SLOT_INITRD,
    SLOT_KERNEL,
    entry_name,
)

FIRMWARES = ("direct", "uboot", "uefi")
ENV_FLASH = 64 << 20  # QEMU virt's second pflash bank, where Debian's U-Boot keeps its environment
UBOOT_ENV_SIZE = 0x40000


class FirmwareError(BuildError):
    pass


@dataclass(frozen=True)
class Firmware:
    """What QEMU needs to run one firmware for one architecture."""
    kind: str
    code: Path  # -bios (U-Boot) or the read-only pflash code (UEFI)
    vars_template: Path | None = None  # UEFI: the variable store each device gets a copy of
    efi_name: str = ""  # UEFI: the removable-media boot path's file name


UBOOT = {"arm64": "/usr/lib/u-boot/qemu_arm64/u-boot.bin", "armhf": "/usr/lib/u-boot/qemu_arm/u-boot.bin"}
UEFI = {"arm64": ("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd", "BOOTAA64.EFI"),
        "amd64": ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", "BOOTX64.EFI")}
PACKAGES = {"uboot": "u-boot-qemu", "uefi": "qemu-efi-aarch64 or ovmf"}


def firmware_for(kind: str, arch: str) -> Firmware:
    """The firmware files for `kind` on a Debian architecture, checked to be installed."""
    if kind == "uboot" and arch in UBOOT:
        fw = Firmware(kind, Path(UBOOT[arch]))
    elif kind == "uefi" and arch in UEFI:
        code, template, name = UEFI[arch]
        fw = Firmware(kind, Path(code), Path(template), name)
    else:
        raise FirmwareError(f"no {kind} firmware for {arch} boards here (uboot: {', '.join(UBOOT)}; uefi: "
                            f"{', '.join(UEFI)})")
    for f in (fw.code, fw.vars_template):
        if f is not None and not f.is_file():
            raise FirmwareError(f"{f} is missing (Debian package {PACKAGES[kind]}; make deps installs it)")
    return fw


def crc32_file(data: bytes) -> bytes:
    """What boot.cmd compares a loaded file's CRC-32 with: big-endian, then little-endian (U-Boot builds with
    CONFIG_HASH store crc32's result big-endian, others in CPU order)."""
    crc = zlib.crc32(data) & 0xFFFFFFFF
    return struct.pack(">I", crc) + struct.pack("<I", crc)


def boot_script(dest: Path) -> Path:
    """boot.cmd compiled into a U-Boot script image (mkimage, u-boot-tools)."""
    src = dest.parent / "boot.cmd"
    src.write_text(resources.files("builder.firmware").joinpath("boot.cmd").read_text())
    run(["mkimage", "-A", "arm", "-O", "linux", "-T", "script", "-C", "none", "-n", "bankboot loader A/B",
         "-d", str(src), str(dest)], package="u-boot-tools", error=FirmwareError,
        env={**os.environ, "SOURCE_DATE_EPOCH": "0"})  # reproducible: mkimage stamps the time otherwise
    return dest


def default_uboot_env(uboot: Path) -> list[str]:
    """U-Boot's built-in default environment, read out of u-boot.bin (NUL-separated, ends in NUL NUL)."""
    data = uboot.read_bytes()
    start = data.find(b"bootcmd=run distro_bootcmd\0")
    if start < 0:
        raise FirmwareError(f"{uboot}: no default environment found (not Debian's distro-boot U-Boot?)")
    end = data.find(b"\0\0", start)
    return [kv.decode() for kv in data[start:end].split(b"\0")]


def uboot_env_flash(uboot: Path, dest: Path, disk_name: str = "virtio0") -> Path:
    """The device's U-Boot environment in QEMU's second pflash bank: the built-in default with no autoboot
    delay (2 s of polling the UART is 20 s of wall time on the instruction clock) and only the disk as boot
    target (no network boot when the disk does not boot). A saved environment replaces the default whole, so
    all of it is kept. QEMU attaches it read-only: U-Boot's saveenv cannot work on QEMU 7.2's flash."""
    env = {}
    for kv in default_uboot_env(uboot):
        k, _, v = kv.partition("=")
        env[k] = v
    env["bootdelay"] = "0"
    env["boot_targets"] = disk_name
    text = dest.with_suffix(".txt")
    text.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    run(["mkenvimage", "-s", hex(UBOOT_ENV_SIZE), "-o", str(dest), str(text)], package="u-boot-tools",
        error=FirmwareError)
    text.unlink()
    with open(dest, "r+b") as f:
        f.truncate(ENV_FLASH)
    return dest


def systemd_boot_efi(arch: str) -> Path:
    """systemd-boot for the architecture: the host's package on amd64, Debian's arm64 package unpacked into
    the cache by `make deps` otherwise."""
    from builder.parts import locate_systemd_boot

    return locate_systemd_boot(arch)


def slot_files(slot: str, kernel: Path, initrd: Path, cmdline: str, tmp: Path) -> list[tuple[Path, str]]:
    """One loader slot: kernel, initramfs, their CRC files (boot.cmd checks them; harmless under UEFI), and
    the command line as cmdline.env (U-Boot's env import format)."""
    crcs = []
    for src, name in ((kernel, SLOT_KERNEL), (initrd, SLOT_INITRD)):
        crc = tmp / f"{slot}-{name}.crc32"
        crc.write_bytes(crc32_file(src.read_bytes()))
        crcs.append((crc, f"{slot}/{name}.crc32"))
    env = tmp / f"{slot}-cmdline.env"
    env.write_text(f"bb_args={cmdline}\n")
    return [(kernel, f"{slot}/{SLOT_KERNEL}"), (initrd, f"{slot}/{SLOT_INITRD}"), (env, f"{slot}/{SLOT_CMDLINE}"),
            *crcs]


def uefi_entry(slot: str, cmdline: str) -> str:
    return (f"title bankboot loader {slot}\nlinux /{slot}/{SLOT_KERNEL}\ninitrd /{slot}/{SLOT_INITRD}\n"
            f"options {cmdline} bankboot.loader_slot={slot}\n")


def boot_files(kind: str, arch: str, kernel: Path, initrd: Path, cmdline: str, tmp: Path,
               watchdog: str = "") -> list[tuple[Path, str]]:
    """The boot FAT's files for a firmware (source, path on the FAT), loader slot a holding the pair."""
    assert kind in ("uboot", "uefi")
    files = slot_files(LOADER_SLOTS[0], kernel, initrd, cmdline, tmp)
    if kind == "uboot":
        good = tmp / "good.env"
        good.write_text(f"bb_good={LOADER_SLOTS[0]}\n")
        files.append((good, f"{LOADER_DIR}/{LOADER_GOOD}"))
        files.append((boot_script(tmp / "boot.scr"), "boot.scr"))
        if watchdog:
            board_env = tmp / "board.env"
            board_env.write_text(f"bb_wdt_arm={watchdog}\n")
            files.append((board_env, f"{LOADER_DIR}/board.env"))
    else:
        conf = tmp / "loader.conf"
        conf.write_text("timeout 0\neditor no\nconsole-mode keep\n")
        entry = tmp / "entry-a.conf"
        entry.write_text(uefi_entry(LOADER_SLOTS[0], cmdline))
        files += [(systemd_boot_efi(arch), f"EFI/BOOT/{firmware_for(kind, arch).efi_name}"),
                  (conf, f"{LOADER_DIR}/loader.conf"), (entry, f"{LOADER_ENTRIES}/{entry_name(1, 'a')}")]
    return files


def device_state(kind: str, arch: str, disk: Path) -> list[Path]:
    """The device's own firmware storage beside its disk image (made once, kept across boots like a board's
    flash): U-Boot's environment, or the UEFI variable store."""
    fw = firmware_for(kind, arch)
    if kind == "uboot":
        env = disk.with_name(disk.name + ".uboot-env")
        if not env.is_file():
            uboot_env_flash(fw.code, env)
        return [env]
    vars_file = disk.with_name(disk.name + ".efivars")
    if not vars_file.is_file():
        assert fw.vars_template is not None
        shutil.copyfile(fw.vars_template, vars_file)
    return [vars_file]


def qemu_args(kind: str, arch: str, disk: Path) -> list[str]:
    """QEMU arguments that start the firmware instead of a kernel."""
    fw = firmware_for(kind, arch)
    state = device_state(kind, arch, disk)
    if kind == "uboot":
        return ["-bios", str(fw.code), "-drive", f"if=pflash,unit=1,format=raw,readonly=on,file={state[0]}"]
    return ["-drive", f"if=pflash,unit=0,format=raw,readonly=on,file={fw.code}",
            "-drive", f"if=pflash,unit=1,format=raw,file={state[0]}",
            # no boot-menu wait (AAVMF otherwise waits 5 s for a key)
            "-boot", "menu=on,splash-time=0"]


def firmware_of(disk: Path) -> str:
    """Which firmware a disk was made for, from what its boot FAT holds (what the firmware itself looks at)."""
    from builder.disk import boot_fat, mtools_env, partitions

    if not partitions(disk):
        return "direct"
    img, env = boot_fat(disk), mtools_env()
    listing = run(["mdir", "-b", "-i", img, "::/"], env=env, check=False).stdout
    if "::/boot.scr" in listing:
        return "uboot"
    efi = run(["mdir", "-b", "-i", img, "::/EFI/BOOT"], env=env, check=False).stdout
    return "uefi" if ".EFI" in efi.upper() else "direct"


def committed_loader(disk: Path, kind: str, dest: Path) -> tuple[Path, str]:
    """The committed loader's initramfs (copied into dest) and command line, read as the firmware would:
    U-Boot's good.env, or the first systemd-boot entry without a boot counter (bankboot inspect)."""
    from builder.disk import boot_fat, mtools_env, read_boot_file
    from initfs.loaderab import parse_entries, read_env

    fat, env = boot_fat(disk), mtools_env()
    if kind == "uboot":
        text = run(["mtype", "-i", fat, f"::/{LOADER_DIR}/{LOADER_GOOD}"], env=env, check=False).stdout
        slot = text.strip().removeprefix("bb_good=")
    else:
        listing = run(["mdir", "-b", "-i", fat, f"::/{LOADER_ENTRIES}"], env=env, check=False).stdout
        blessed = [e for e in parse_entries([line.rsplit("/", 1)[-1].strip() for line in listing.splitlines()])
                   if e[2] is None]
        slot = blessed[0][1] if blessed else LOADER_SLOTS[0]
    slot = slot if slot in LOADER_SLOTS else LOADER_SLOTS[0]
    (dest / slot).mkdir(parents=True, exist_ok=True)
    initrd = read_boot_file(disk, f"{slot}/{SLOT_INITRD}", dest)
    args = read_env(str(read_boot_file(disk, f"{slot}/{SLOT_CMDLINE}", dest)))
    return initrd, args.get("bb_args", "")
