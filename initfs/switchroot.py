"""Hand over to the image: move /dev /proc /sys /run into the new root (moved, not remounted, as
systemd expects), free the initramfs, make the new root / and exec its init as PID 1.

Also the environment our children get (clean_environ: the image's init, the rescue shell, a self-test).
PyInstaller's onedir bootloader re-execs itself with LD_LIBRARY_PATH pointing into its bundle and keeps the
caller's value as LD_LIBRARY_PATH_ORIG; anything we start (busybox, the image's init) must see the
environment the kernel gave us, not the bundle's. Here rather than in a module of its own: the hand-over
needs it after the initramfs is freed (so it is imported before), and a module more costs every boot.

And the bankctl kit, which switch_root keeps and every boot exposes:
bankctl in the booted system runs from the initramfs itself, never from a copy on the banks partition.

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
from initfs.syscalls import MS_BIND, MS_MOVE, MS_NODEV, MS_NOSUID, MS_RDONLY, MS_REMOUNT, mount
from overlay_layout import durable
from overlay_layout.contract import KIT_LIST, LAUNCHER, RUN
from overlay_layout.layout import Layout

TYPE_CHECKING = False  # typing costs a quarter of a second to import under TCG: only for the checker
if TYPE_CHECKING:
    from typing import NoReturn

DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def clean_environ(env: dict[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment for a child of ours: PyInstaller's variables out, the *_ORIG values back."""
    src = dict(os.environ if env is None else env)
    out: dict[str, str] = {}
    for key, value in src.items():
        if key.endswith("_ORIG"):
            continue
        if key.startswith(("_PYI", "_MEI", "PYINSTALLER_")):
            continue
        out[key] = value
    for key, value in src.items():
        if key.endswith("_ORIG"):
            base = key.removesuffix("_ORIG")
            out[base] = value
    # A variable PyInstaller set that had no original value must go altogether.
    for key in ("LD_LIBRARY_PATH",):
        if key + "_ORIG" not in src:
            out.pop(key, None)
    out.setdefault("PATH", DEFAULT_PATH)
    return out


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


HANDED_OVER = ("/dev", "/proc", "/sys", "/run")


def _free_initramfs(root_dev: int, path: str = "/", keep: frozenset[str] = frozenset()) -> None:
    """Delete everything on the initramfs (rootfs) itself, never crossing into another filesystem, except
    the paths in `keep` (relative: the bankctl kit, which stays mounted read-only on /run/bankboot/kit).
    Only directories are stat'ed (a mount point is one): files and links go by their directory entry's
    type, one unlink each, which keeps the hand-over short on a slow board."""
    for entry in os.scandir(path):
        rel = entry.path.lstrip("/")
        if rel in keep:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.stat(follow_symlinks=False).st_dev != root_dev:
                    continue  # a mount point (the new root): not ours to touch
                _free_initramfs(root_dev, entry.path, keep)
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass  # a kept path below it, or gone already


def _used_bytes(path: str) -> int | None:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize if st.f_blocks else None


def resolve_in(newroot: str, path: str) -> str | None:
    """The host path `path` names inside newroot, symlinks followed there (absolute targets taken as
    inside newroot); None for a symlink loop."""
    for _ in range(40):
        host = newroot + path
        if not os.path.islink(host):
            return host
        target = os.readlink(host)
        path = target if target.startswith("/") else os.path.normpath(os.path.join(os.path.dirname(path), target))
    return None


def switch_root(newroot: str, init: str, argv: list[str], keep: list[str] | None = None) -> NoReturn:
    """keep: initramfs paths (relative) not freed, for the kit."""
    for m in HANDED_OVER:
        os.makedirs(newroot + m, exist_ok=True)
        mount(m, newroot + m, None, MS_MOVE)
    root_dev = os.lstat("/").st_dev
    used = _used_bytes("/")  # None on ramfs (rootfs is ramfs when root= is given), which counts no blocks
    _free_initramfs(root_dev, "/", frozenset(keep or ()))
    now = _used_bytes("/")
    amount = f" {(used - now) / 1e6:.1f} MB of" if used is not None and now is not None else ""
    log.log(f"freed{amount} the initramfs (kept {len(keep or ())} kit paths); exec {init}")
    os.chdir(newroot)
    mount(".", "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    env = clean_environ()
    try:
        os.execve(init, [init, *argv], env)
    except OSError as e:
        # Past the point of return: the mounts are moved and the initramfs is gone. Reboot; the next boot
        # counts this one (a trial's try was spent, a committed image's boot is unconfirmed).
        from initfs.rescue import reboot_now

        reboot_now(f"cannot exec the image's {init}: {e.strerror}; rebooting", 5.0)
