"""`bankboot disk`: a partitioned disk image, built without root.

    p1  FAT   boot: kernel, initramfs, cmdline.txt (the board's command line, how to find p2 and p3)
    p2  ext4  banks: the layout (docs/layout.md) with the image installed and `current` pointing at it
    p3  ext4  userdata

Partitions are made as separate files (mkfs.vfat + mcopy, mkfs.ext4 -d) and copied into the table
sfdisk wrote on the image file. The MBR label (which a Raspberry Pi's firmware needs) has a disk id
derived from the image, so PARTUUIDs are stable for the same inputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.bmap import copy_sparse, mkfs_env, write_bmap
from builder.board import Board
from builder.errors import BuildError
from builder.image import extract_image, read_bank
from builder.parts import locate_kernel
from builder.run import run
from overlay_layout.contract import TLS_PIECE, InitramfsConf
from overlay_layout.layout import Layout
from overlay_layout.manifest import dump_manifest
from overlay_layout.state import Banks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.records import Manifest
    from overlay_layout.trust import KeySet

MiB = 1 << 20
BOOT_SIZE = 64 * MiB
FIRST = 1 * MiB
BANKS_LABEL = "bankboot-banks"
USERDATA_LABEL = "bankboot-data"


class DiskError(BuildError):
    pass


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": MiB, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise DiskError(f"size {text!r} is not a size like 512M or 2G") from None


def _run(cmd: list[str], **kw) -> str:
    return run(cmd, error=DiskError, **kw).stdout


@dataclass(frozen=True)
class DiskLayout:
    disk_id: int
    parts: list[tuple[int, int]]  # (start, size) in bytes for p1..p3

    def partuuid(self, n: int) -> str:
        return f"{self.disk_id:08x}-{n:02x}"


def plan(size: int, userdata: int, disk_id: int, boot: int = BOOT_SIZE) -> DiskLayout:
    if boot < 16 * MiB:
        raise DiskError(f"a boot partition of {boot // MiB} MiB is too small (at least 16 MiB)")
    banks = size - FIRST - boot - userdata - MiB
    if banks < 32 * MiB:
        raise DiskError(f"disk size {size // MiB} MiB leaves {banks // MiB} MiB for banks; make it bigger")
    p1 = (FIRST, boot)
    p2 = (p1[0] + p1[1], banks)
    p3 = (p2[0] + p2[1], userdata)
    return DiskLayout(disk_id, [p1, p2, p3])


def loader_room(kernel: Path, initramfs: Path, extra: int = 0) -> int:
    """The boot partition `bankboot disk` makes when no --boot-size is given: room for two loaders, so that
    `bankctl install-loader` works on the disk as made (the new pair goes into the other loader slot, or beside
    the old pair kept as .previous on a direct disk). Each loader is this disk's kernel, initramfs and the
    firmware's own files (`extra`) with half as much again to spare, for an image whose kernel or initramfs is
    a release larger; rounded up to 32 MiB, never under BOOT_SIZE. Debian's arm64 kernel (33 MB) and a
    bankboot initramfs make 128 MiB; amd64 and armhf stay at 64 MiB."""
    pair = kernel.stat().st_size + initramfs.stat().st_size + extra
    room = 2 * pair * 3 // 2 + 4 * MiB  # + the FAT's own tables and the small files (cmdline, CRCs, entries)
    return max(BOOT_SIZE, -(-room // (32 * MiB)) * 32 * MiB)


def cmdline_for(board: Board, layout: DiskLayout, extra: str = "") -> str:
    parts = [board.cmdline, f"root=PARTUUID={layout.partuuid(2)}", "rootwait",
             f"bankboot.userdata=PARTUUID={layout.partuuid(3)}", extra]
    return " ".join(p for p in parts if p)


def _mkfs_ext4(path: Path, size: int, label: str, content: Path | None) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    # The inode tables and journal zeroed now, not by the kernel's ext4lazyinit thread during the device's
    # first boots, where it competes with the boot for the CPU and the storage.
    cmd = ["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0"]
    if content is not None:
        cmd += ["-d", str(content)]
    _run([*cmd, str(path)], env=mkfs_env())


def check_bootable(bank: Path, manifest: Manifest, initramfs: Path, keys: KeySet | None = None) -> InitramfsConf:
    """Refuse a disk whose image its initramfs would refuse at boot (unsigned, signed by keys it does not
    trust or not enough of them, needing a newer bankboot, another architecture): that disk's first boot
    would end in the rescue policy. `keys`: the keys in force instead of the initramfs's own (a rotated
    disk). The baseline busybox-sh initramfs checks nothing, so nothing is checked for it. Returns the
    initramfs's settings (read once for every check of a disk)."""
    from builder.initramfs import read_settings
    from overlay_layout.trust import Policy, TrustError

    try:
        conf, trusted = read_settings(initramfs)
    except (ValueError, TrustError) as e:
        raise DiskError(str(e)) from None
    if conf.init != "frozen":
        return conf
    if conf.arch and conf.arch != manifest["arch"]:
        raise DiskError(f"{initramfs} is for {conf.arch}; {bank} is an {manifest['arch']} image")
    try:
        policy = Policy.of(conf, trusted)
        if keys is None and manifest.get("key_updates"):  # as its first boot would: the chain it carries
            from overlay_layout.keychain import extend

            keys = extend(policy.root, manifest["key_updates"], str(bank))
        policy.check(manifest, conf.bankboot, keys)
    except TrustError as e:
        raise DiskError(f"{initramfs} would refuse {bank} at boot: {e}") from None
    return conf


def check_kernel(bank: Path, manifest: Manifest, initramfs: Path, conf: InitramfsConf, loader_kernel: Path) -> None:
    """An image carrying a kernel other than the loader's boots only by a kexec: refuse a disk whose
    initramfs cannot kexec (a board whose firmware holds the CPUs a kexec needs, boot.kexec = false), as its
    first boot would find nothing it can boot. `conf`: the initramfs's settings (check_bootable's)."""
    from builder.kernelfile import read_kernel

    k = manifest.get("kernel")
    if not k:
        return
    if conf.init != "frozen" or conf.kexec != "none":
        return
    loader = read_kernel(loader_kernel)
    if (loader.release, loader.version) == (k["release"], k["version"]):
        return
    raise DiskError(f"{bank} carries its own kernel {k['release']}, which a loader on kernel {loader.release} boots "
                    f"only by kexec, and {initramfs} does not kexec (initramfs.conf kexec=none: the board cannot, "
                    f"board key boot.kexec): the disk's first boot would find nothing it can boot. Build the image "
                    f"without --kernel for this board")


def tls_piece_for(initramfs: Path) -> Path | None:
    """The TLS piece built with `initramfs` (beside it), which `bankctl stage https://` reads from the boot
    partition; None (with a warning) when the initramfs names none or it is not there, an error when the
    one there is another build's."""
    from builder.initramfs import read_settings
    from builder.tls import piece_path
    from overlay_layout.net.tlspiece import digest

    conf, _ = read_settings(initramfs)
    if not conf.tls:
        return None
    path = piece_path(initramfs)
    if not path.is_file():
        print(f"warning: {path} (the TLS piece of {initramfs}) is missing: this disk's bankctl cannot fetch https "
              f"URLs", file=sys.stderr)
        return None
    if digest(path.read_bytes()) != conf.tls:
        raise DiskError(f"{path} is not the TLS piece {initramfs} was built with (rebuild both together)")
    return path


def build_disk(board: Board, bank: Path, output: Path, size: int, initramfs: Path,
               userdata_size: int = 64 * MiB, extra_cmdline: str = "",
               userdata_files: list[Path] | None = None, boot_size: int | None = BOOT_SIZE,
               firmware: str = "direct", device_key: Path | None = None) -> tuple[DiskLayout, Manifest]:
    """userdata_files are copied into the userdata partition (an update to stage, say). boot_size: room for
    two loaders when images carry their own kernels (bankctl install-loader keeps the old one); None: as much
    as that takes for this kernel and initramfs (loader_room, what `bankboot disk` does by default). firmware:
    what reads the boot partition (builder/firmware): `bankboot disk` passes the board's; this API defaults
    to direct, what the tests of the init boot (the firmware chains have tests of their own). device_key:
    a recipient's private key, for an encrypted bank (installed plain, as a device stages it)."""
    from builder.firmware import FIRMWARES, boot_files

    if firmware not in FIRMWARES:
        raise DiskError(f"firmware {firmware!r} is not one of {', '.join(FIRMWARES)}")
    if board.power_of_two and size & (size - 1):
        raise DiskError(f"board {board.name} needs a power-of-two disk size (its SD card): 256M, 512M, 1G, ... "
                        f"not {size // MiB} MiB")
    with read_bank(bank) as opened:
        manifest = opened.manifest
    if manifest["arch"] != board.arch.debian:
        raise DiskError(f"{bank} is an {manifest['arch']} image; board {board.name} is {board.arch.debian}")
    if not initramfs.is_file():
        raise DiskError(f"initramfs {initramfs} does not exist (make initramfs BOARD={board.name})")
    conf = check_bootable(bank, manifest, initramfs)
    kernel = locate_kernel(board)
    check_kernel(bank, manifest, initramfs, conf, kernel.image)
    disk_id = int.from_bytes(hashlib.sha256(f"{board.name}:{manifest['sha256']}".encode()).digest()[:4], "big") or 1
    tls = tls_piece_for(initramfs)
    if boot_size is None:
        boot_size = loader_room(kernel.image, initramfs, tls.stat().st_size if tls is not None else 0)
    layout = plan(size, userdata_size, disk_id, boot_size)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmpdir:
        tmp = Path(tmpdir)
        # p1: boot
        boot = tmp / "boot.vfat"
        _run(["mkfs.vfat", "-C", "-n", "BOOT", "-i", f"{disk_id:08x}", str(boot), str(layout.parts[0][1] // 1024)])
        cmdline = cmdline_for(board, layout, extra_cmdline)
        if firmware == "direct":
            (tmp / "cmdline.txt").write_text(cmdline + "\n")
            files = [(kernel.image, board.kernel_name), (initramfs, "initramfs.img"),
                     (tmp / "cmdline.txt", "cmdline.txt")]
        else:
            files = boot_files(firmware, board.arch.debian, kernel.image, initramfs, cmdline, tmp,
                               board.uboot_watchdog)
        if tls is not None:
            files.append((tls, TLS_PIECE))
        if board.config_txt:
            (tmp / "config.txt").write_text(board.config_txt.lstrip())
            files.append((tmp / "config.txt", "config.txt"))
        if board.dtb:
            if kernel.dtb_dir is None or not (kernel.dtb_dir / board.dtb).is_file():
                raise DiskError(f"board {board.name}: device tree {board.dtb} not found with the kernel")
            files.append((kernel.dtb_dir / board.dtb, Path(board.dtb).name))
        mtools = mtools_env()
        for d in sorted({str(Path(name).parent) for _, name in files} - {"."}, key=len):
            for i in range(1, len(Path(d).parts) + 1):
                _run(["mmd", "-D", "s", "-i", str(boot), "::" + "/".join(Path(d).parts[:i])], env=mtools,
                     ok=(0, 1))
        for src, name in files:
            _run(["mcopy", "-i", str(boot), "-o", str(src), f"::{name}"], env=mtools)
        # p2: banks, with the layout populated
        stage = tmp / "banks"
        lay = Layout(str(stage))
        image_id = manifest["id"]
        os.makedirs(lay.image_dir(image_id))
        extract_image(bank, Path(lay.image_dir(image_id)), device_key)
        Path(lay.manifest_path(image_id)).write_bytes(dump_manifest(manifest))
        lay.prepare_image_dirs(image_id)
        Banks(str(stage)).install_first(image_id)  # current, and the anti-rollback floors from the start
        banks = tmp / "banks.ext4"
        _mkfs_ext4(banks, layout.parts[1][1], BANKS_LABEL, stage)
        # p3: userdata
        data = tmp / "userdata.ext4"
        content = None
        if userdata_files:
            content = tmp / "userdata"
            content.mkdir()
            for f in userdata_files:
                shutil.copyfile(f, content / f.name)
        _mkfs_ext4(data, layout.parts[2][1], USERDATA_LABEL, content)
        # the disk: partition table, then each filesystem at its offset
        disk = tmp / "disk.img"
        with open(disk, "wb") as new:
            new.truncate(size)
        p1_type = "ef" if firmware == "uefi" else "c"  # the ESP type for UEFI, FAT32 (LBA) for the others
        script = f"label: dos\nlabel-id: 0x{disk_id:08x}\nunit: sectors\n" + "".join(
            f"start={s // 512}, size={n // 512}, type={t}{', bootable' if i == 0 else ''}\n"
            for i, ((s, n), t) in enumerate(zip(layout.parts, (p1_type, "83", "83"), strict=True)))
        _run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)], input=script)
        with open(disk, "r+b") as out:  # only the blocks the filesystems use: the rest stays a hole
            for (start, _), part in zip(layout.parts, (boot, banks, data), strict=True):
                copy_sparse(part, out.fileno(), start)
            os.fsync(out.fileno())
        bmap = write_bmap(disk, tmp / "disk.bmap", DiskError)
        disk.replace(output)
        bmap.replace(bmap_path(output))
    for stale in (".uboot-env", ".efivars"):  # a new device: its firmware storage starts afresh
        output.with_name(output.name + stale).unlink(missing_ok=True)
    return layout, manifest


def bmap_path(disk: Path) -> Path:
    """Where `bankboot disk` puts the block map: beside the image, as Yocto names it (bmaptool finds it)."""
    return disk.with_name(disk.name + ".bmap")


def partitions(disk: Path) -> list[dict]:
    return json.loads(_run(["sfdisk", "-J", str(disk)]))["partitiontable"]["partitions"]


def mtools_env() -> dict[str, str]:
    """The environment for mtools on a boot FAT: mtools checks a FAT's geometry against a floppy's unless
    told not to, and the boot FAT is a partition (every mtools call on one runs with this)."""
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def boot_fat(disk: Path) -> str:
    """The disk's boot FAT (partition 1) as mtools's -i names it: FILE@@OFFSET."""
    parts = partitions(disk)
    if not parts:
        raise DiskError(f"{disk} has no partition table")
    return f"{disk}@@{parts[0]['start'] * 512}"


def read_boot_file(disk: Path, name: str, dest: Path) -> Path:
    """One file of the disk's boot partition (the FAT partition 1), copied into `dest`."""
    _run(["mcopy", "-n", "-o", "-i", boot_fat(disk), f"::{name}", str(dest / name)], env=mtools_env())
    return dest / name


def read_boot_files(disk: Path, dest: Path, kernel_name: str = "vmlinuz") -> tuple[Path, Path, str]:
    """What firmware would load from the boot partition: (kernel, initramfs, command line)."""
    kernel, initrd = read_boot_file(disk, kernel_name, dest), read_boot_file(disk, "initramfs.img", dest)
    return kernel, initrd, read_boot_file(disk, "cmdline.txt", dest).read_text().strip()
