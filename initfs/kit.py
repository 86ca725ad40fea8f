"""bankctl in the booted system runs from the initramfs itself, never from a copy on the banks partition.

Before the hand-over the init bind-mounts the initramfs read-only on /run/bankboot/kit, and switch_root
keeps the kit's files (the list the builder wrote in /etc/bankboot/kit: the frozen program, its libraries,
ld.so, bankctl's launcher, /etc/bankboot with the trusted keys and initramfs.conf) when it frees the rest
(busybox too: it is the rescue shell's, and an image has its own). So the kit is exactly what the
bootloader loaded, in RAM: nothing on the banks partition can swap it or the trust policy bankctl obeys,
and there is nothing to copy or check on any boot.

    /run/bankboot/kit          the initramfs, read-only (kit files only)
    /run/bankboot/bin/bankctl  -> ../kit/bin/bankctl, a small program that runs the kit's init as bankctl
                                  through the kit's ld.so and libraries (builder/launcher.py)

Kits that older bankboot builds copied into overlay/<image>/utils/bankboot-* are removed at boot (each
removal logged): bankctl never runs them."""

from __future__ import annotations

import errno
import os

from initfs import log
from initfs.syscalls import MS_BIND, MS_NODEV, MS_NOSUID, MS_RDONLY, MS_REMOUNT, mount
from overlay_layout import durable
from overlay_layout.contract import KIT_LIST, LAUNCHER, RUN
from overlay_layout.layout import Layout

OLD_KIT_PREFIX = "bankboot-"


def read_kit_list(source: str = "/") -> list[str]:
    """The kit's paths, relative to the initramfs root."""
    with open(os.path.join(source, KIT_LIST.lstrip("/"))) as f:
        return [line.strip().strip("/") for line in f if line.strip()]


def expose_kit(run: str = RUN) -> str:
    """Bind the initramfs read-only on <run>/kit and link bankctl's launcher. Returns the kit path."""
    kit = f"{run}/kit"
    os.makedirs(kit, exist_ok=True)
    mount("/", kit, None, MS_BIND)
    mount("none", kit, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    write_launcher(run)
    return kit


def remove_old_kits(layout: Layout, images: list[str], replaced: list[str] | None = None) -> list[str]:
    """Kits on the banks partition (from older builds, or planted there): removed, never run. Returns the
    paths removed, for the console and the boot log. A utils directory that is a symlink is never followed:
    it is replaced by an empty directory (said in `replaced`)."""
    from overlay_layout.nofollow import check_dirs

    removed = []
    for image in images:
        utils = layout.sub(image, "utils")
        try:
            check_dirs(layout.root, os.path.relpath(utils, layout.root))
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno != errno.ELOOP:
                continue
            found: list[str] = []
            layout.ensure_sub(image, "utils", found)
            for r in found:
                log.error(f"image {image}: {r}")
            if replaced is not None:
                replaced += found
            continue
        kits = [f"{utils}/{name}" for name in os.listdir(utils) if name.startswith(OLD_KIT_PREFIX)]
        for path in kits:
            durable.remove_tree(path)
        if kits:
            durable.fsync_dir(utils)
        removed += kits
    for path in removed:
        log.log(f"removed {path}: a bankctl kit on the banks partition is never run (bankctl runs from the "
                f"initramfs)")
    return removed


def write_launcher(run: str = RUN) -> None:
    """<run>/bin/bankctl as a link into the kit. The launcher is a program of its own (builder/launcher.py),
    not a script: a sealed kit carries no shell to run one."""
    os.makedirs(f"{run}/bin", exist_ok=True)
    for path in [LAUNCHER]:
        link = f"{run}/bin/{os.path.basename(path)}"
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(f"../kit{path}", link)
