"""bankctl in the booted system runs from the initramfs itself, never from a copy on the banks partition.

Before the hand-over the init bind-mounts the initramfs read-only on /run/bankboot/kit, and switch_root
keeps the kit's files (the list the builder wrote in /etc/bankboot/kit: the frozen program, its libraries,
ld.so, busybox, /etc/bankboot with the trusted keys and initramfs.conf) when it frees the rest. So the kit
is exactly what the bootloader loaded, in RAM: nothing on the banks partition can swap it or the trust
policy bankctl obeys, and there is nothing to copy or check on any boot.

    /run/bankboot/kit          the initramfs, read-only (kit files only)
    /run/bankboot/bin/busybox  -> ../kit/bin/busybox
    /run/bankboot/bin/bankctl     a busybox sh script that runs the kit's init through the kit's ld.so

Kits that older bankboot builds copied into overlay/<image>/utils/bankboot-* are removed at boot (each
removal logged): bankctl never runs them."""

from __future__ import annotations

import os

from initfs import log
from initfs.syscalls import MS_BIND, MS_NODEV, MS_NOSUID, MS_RDONLY, MS_REMOUNT, mount
from overlay_layout import durable
from overlay_layout.contract import KIT_LIST, RUN, InitramfsConf
from overlay_layout.layout import Layout

OLD_KIT_PREFIX = "bankboot-"


def read_kit_list(source: str = "/") -> list[str]:
    """The kit's paths, relative to the initramfs root."""
    with open(os.path.join(source, KIT_LIST.lstrip("/"))) as f:
        return [line.strip().strip("/") for line in f if line.strip()]


def expose_kit(config: InitramfsConf, run: str = RUN) -> str:
    """Bind the initramfs read-only on <run>/kit and write the bankctl launcher. Returns the kit path."""
    kit = f"{run}/kit"
    os.makedirs(kit, exist_ok=True)
    mount("/", kit, None, MS_BIND)
    mount("none", kit, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    write_launcher(config, run)
    return kit


def remove_old_kits(layout: Layout, images: list[str]) -> list[str]:
    """Kits on the banks partition (from older builds, or planted there): removed, never run. Returns the
    paths removed, for the console and the boot log."""
    removed = []
    for image in images:
        utils = layout.sub(image, "utils")
        try:
            names = os.listdir(utils)
        except OSError:
            continue
        kits = [f"{utils}/{name}" for name in names if name.startswith(OLD_KIT_PREFIX)]
        for path in kits:
            durable.remove_tree(path)
        if kits:
            durable.fsync_dir(utils)
        removed += kits
    for path in removed:
        log.log(f"removed {path}: a bankctl kit on the banks partition is never run (bankctl runs from the "
                f"initramfs)")
    return removed


def write_launcher(config: InitramfsConf, run: str = RUN) -> None:
    os.makedirs(f"{run}/bin", exist_ok=True)
    busybox = f"{run}/bin/busybox"
    if os.path.lexists(busybox):
        os.unlink(busybox)
    os.symlink("../kit/bin/busybox", busybox)
    interp = config.ld_so()
    libdirs = ":".join(f"$k{d}" for d in config.libdirs)
    # LD_LIBRARY_PATH, not ld.so --library-path: PyInstaller's bootloader re-execs itself and the
    # environment is what survives that. The trust policy is not taken from the environment: bankctl
    # reads it from the kit it runs from (bankctl.kit_root).
    script = (f"#!{RUN}/bin/busybox sh\n# bankctl: bankboot's frozen program from the initramfs, through its ld.so.\n"
              f"k={RUN}/kit\nexport BANKBOOT_ENTRY=bankctl LD_LIBRARY_PATH=\"{libdirs}\"\n"
              f'exec "$k{interp}" "$k/init" "$@"\n')
    with open(f"{run}/bin/bankctl", "w") as f:
        f.write(script)
    os.chmod(f"{run}/bin/bankctl", 0o755)
