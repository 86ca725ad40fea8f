"""`bankctl install-loader IMAGE`: an installed image's own kernel and bankboot initramfs become the loader
on the boot partition, so later boots run them directly instead of kexec'ing them.

This is the one write that is not A/B: the boot partition holds one kernel and one initramfs, and the
firmware knows nothing of banks. So: only files the signed manifest vouches for (sha256 checked while
copying), each written beside the old one and fsynced, the old one kept as `<name>.previous` (fsynced),
then renamed into place; a person can put `.previous` back from another machine. Raspberry Pi 4/5
firmware can try a loader once (tryboot); docs/boards.md says how, and what stands in on QEMU."""

from __future__ import annotations

import os

from initfs.syscalls import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, mount, umount
from overlay_layout import durable
from overlay_layout.contract import BOOT_MOUNT, LOADER_SOURCE, TLS_PIECE
from overlay_layout.errors import BankbootError
from overlay_layout.hashing import copy_hashed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.records import KernelFile, Manifest

SOURCE = LOADER_SOURCE  # the image's squashfs, read-only
BOOT = BOOT_MOUNT  # the boot partition
INITRAMFS_NAME = "initramfs.img"


class LoaderError(BankbootError):
    pass


def boot_partition(banks_root: str) -> str:
    """Partition 1 of the disk holding the banks partition (the layout `bankboot disk` makes)."""
    st = os.stat(banks_root)
    sysdir = os.path.realpath(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not os.path.isfile(os.path.join(sysdir, "partition")):
        raise LoaderError(f"{banks_root} is not on a disk partition ({sysdir}): give --boot DEVICE")
    disk = os.path.dirname(sysdir)
    for name in sorted(os.listdir(disk)):
        try:
            with open(os.path.join(disk, name, "partition")) as f:
                if f.read().strip() == "1":
                    return f"/dev/{name}"
        except OSError:
            continue
    raise LoaderError(f"the disk {os.path.basename(disk)} has no partition 1 (the boot partition): give --boot DEVICE")


def _copy(src: str, dest: str) -> tuple[int, str]:
    """src into a new dest (a leftover of a cut install is replaced), fsynced, hashing as it goes:
    (size, sha256)."""
    if os.path.lexists(dest):
        os.unlink(dest)
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return copy_hashed(fd, 0, None, dest)
    finally:
        os.close(fd)


def _copy_checked(src: str, dest: str, want: KernelFile) -> None:
    """_copy, and dest removed when it does not match the signed manifest."""
    size, digest = _copy(src, dest)
    if size != want["size"] or digest != want["sha256"]:
        os.unlink(dest)
        raise LoaderError(f"{src} does not match the signed manifest (size {size}, sha256 {digest}); "
                          f"the image is damaged: nothing installed")


def check_room(files: list[tuple[str, str, KernelFile]]) -> None:
    """The new files and a .previous copy of each old one must fit beside what stays, before anything is
    written (a full FAT partition mid-way would only waste the write)."""
    def size(path: str) -> int:
        return os.path.getsize(path) if os.path.exists(path) else 0

    need = sum(want["size"] + size(f"{BOOT}/{name}") - size(f"{BOOT}/{name}.previous") for _, name, want in files)
    st = os.statvfs(BOOT)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise LoaderError(f"the boot partition has {free / 1e6:.1f} MB free; the new loader and a copy of the old "
                          f"one need {need / 1e6:.1f} MB: nothing installed (bankboot disk --boot-size makes a "
                          f"bigger boot partition)")


def drop_leftovers(paths: list[str]) -> None:
    """What a cut install left beside the files in place (a `.new` copy, whole or cut short, never booted):
    removed before the room is counted, else every cut would take a loader's worth of the partition and the
    retry would find no room."""
    for path in paths:
        if os.path.lexists(path):
            durable.remove(path)


def _keep_previous(path: str) -> None:
    """A copy of the file now in place as path.previous (written beside, fsynced, renamed)."""
    if not os.path.exists(path):
        return
    _copy(path, f"{path}.previous.new")
    os.replace(f"{path}.previous.new", f"{path}.previous")


def mount_boot(boot_dev: str, readonly: bool = False) -> None:
    os.makedirs(BOOT, exist_ok=True)
    try:
        mount(boot_dev, BOOT, "vfat", MS_NOSUID | MS_NODEV | MS_NOEXEC | (MS_RDONLY if readonly else 0))
    except OSError as e:
        raise LoaderError(f"cannot mount the boot partition {boot_dev} (vfat): {e.strerror}") from e


def install_ab(lower: str, manifest: Manifest, boot_dev: str, tries: int) -> list[str]:
    """A boot FAT with two loader slots (initfs/loaderab.py): the new pair into the slot the firmware does not
    boot by default, then a one-shot try of it armed in the firmware's own way; the init commits it once it
    booted an image, and until then every reset returns to the committed loader."""
    from initfs.loaderab import LoaderABError, good_slot, install_slot, other, slot_cmdline, status
    from overlay_layout.contract import SLOT_INITRD, SLOT_KERNEL

    k = manifest["kernel"]
    wants = {lower + k["image"]["path"]: k["image"], lower + k["initramfs"]["path"]: k["initramfs"]}
    if "tls" in k:
        wants[lower + k["tls"]["path"]] = k["tls"]
    st = status(BOOT)
    good = st.get("good") or good_slot(BOOT)
    slot = other(good)
    cmdline = slot_cmdline(BOOT, good)
    if not cmdline:
        raise LoaderError(f"the committed loader {good} has no command line on {boot_dev}: nothing installed")
    names = (SLOT_KERNEL, SLOT_INITRD, TLS_PIECE)
    drop_leftovers([os.path.join(BOOT, slot, f".{n}.new") for n in names])
    old = sum(os.path.getsize(p) for p in (os.path.join(BOOT, slot, n) for n in names) if os.path.exists(p))
    need = sum(w["size"] for w in wants.values()) - old
    fs = os.statvfs(BOOT)
    if need > fs.f_bavail * fs.f_frsize:
        raise LoaderError(f"the boot partition has {fs.f_bavail * fs.f_frsize / 1e6:.1f} MB free; loader slot {slot} "
                          f"needs {need / 1e6:.1f} MB more: nothing installed (bankboot disk --boot-size)")
    try:
        done = install_slot(BOOT, slot, lambda src, dest: _copy_checked(src, dest, wants[src]),
                            [(lower + k["image"]["path"], SLOT_KERNEL), (lower + k["initramfs"]["path"], SLOT_INITRD)],
                            cmdline, tries)
    except LoaderABError as e:
        raise LoaderError(str(e)) from e
    if "tls" in k:  # beside the slot's initramfs (initfs/tlskit.py looks there too)
        _copy_checked(lower + k["tls"]["path"], f"{BOOT}/{slot}/.{TLS_PIECE}.new", k["tls"])
        os.replace(f"{BOOT}/{slot}/.{TLS_PIECE}.new", f"{BOOT}/{slot}/{TLS_PIECE}")
        durable.fsync_dir(f"{BOOT}/{slot}")
    return [f"{boot_dev}:{line}" for line in done] + [
        f"loader {good} stays the default until loader {slot} has booted an image"]


def install_loader(lower: str, manifest: Manifest, boot_dev: str, kernel_name: str, tries: int) -> list[str]:
    """Copy the image's kernel and initramfs (its squashfs mounted at `lower`) onto the boot partition at
    boot_dev: into the loader slot not booted by default, on a disk made for firmware (install_ab); else as
    kernel_name and initramfs.img. Returns what was done, a line each."""
    from initfs.loaderab import firmware_on

    k = manifest["kernel"]
    files = [(lower + k["image"]["path"], kernel_name, k["image"]),
             (lower + k["initramfs"]["path"], INITRAMFS_NAME, k["initramfs"])]
    if "tls" in k:  # the new initramfs's TLS piece goes beside it (initfs/tlskit.py reads it there)
        files.append((lower + k["tls"]["path"], TLS_PIECE, k["tls"]))
    mount_boot(boot_dev)
    done = []
    try:
        if firmware_on(BOOT) != "direct":
            return install_ab(lower, manifest, boot_dev, tries)
        drop_leftovers([f"{BOOT}/{name}{suffix}" for _, name, _ in files for suffix in (".new", ".previous.new")])
        check_room(files)
        for src, name, want in files:  # both new files complete before anything in place changes
            _copy_checked(src, f"{BOOT}/{name}.new", want)
        durable.fsync_dir(BOOT)
        for _, name, _ in files:
            _keep_previous(f"{BOOT}/{name}")
        durable.fsync_dir(BOOT)
        for _, name, want in files:
            durable.checkpoint(f"install {name}")
            os.replace(f"{BOOT}/{name}.new", f"{BOOT}/{name}")
            done.append(f"{boot_dev}:{name} <- {want['size']} bytes (the old one kept as {name}.previous)")
        durable.fsync_dir(BOOT)
    finally:
        for _, name, _ in files:
            for leftover in (f"{BOOT}/{name}.new", f"{BOOT}/{name}.previous.new"):
                if os.path.exists(leftover):
                    os.unlink(leftover)
        os.sync()
        umount(BOOT)
    return done


def mount_source(squashfs: str) -> None:
    """The image's squashfs, read-only at SOURCE (its bytes are checked against the manifest on copy)."""
    from initfs.blockdev import attach_readonly

    os.makedirs(SOURCE, exist_ok=True)
    dev, fd = attach_readonly(squashfs)
    try:
        mount(dev, SOURCE, "squashfs", MS_RDONLY | MS_NODEV | MS_NOSUID)
    except OSError as e:
        raise LoaderError(f"cannot mount {squashfs}: {e.strerror}") from e
    finally:
        os.close(fd)
