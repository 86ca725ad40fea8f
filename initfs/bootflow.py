"""The boot: find the banks partition, choose the image, mount its squashfs read-only under an
overlay with the image's upper/work, add /userdata, and hand over to the image's init."""

from __future__ import annotations

import errno
import os
from typing import NoReturn

from initfs import log
from initfs.blockdev import wait_for_device
from initfs.cmdline import Cmdline
from initfs.syscalls import MS_BIND, MS_NODEV, MS_NOSUID, MS_RDONLY, mount
from overlay_layout.layout import Layout, LayoutError

RUN = "/run/bankboot"
BANKS = f"{RUN}/banks"  # the banks partition, reachable from the booted system here
LOWER = f"{RUN}/lower"  # the image's squashfs
NEWROOT = "/newroot"
DEFAULT_ROOT_TIMEOUT = 30.0


class BootError(RuntimeError):
    pass


def _seconds(cmdline: Cmdline, key: str, default: float | None) -> float | None:
    raw = cmdline.get(key)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise BootError(f"{key}={raw!r} on the kernel command line is not a number of seconds") from None


def mount_banks(cmdline: Cmdline) -> Layout:
    spec = cmdline.get("root")
    if not spec:
        raise BootError("no root= on the kernel command line: it names the banks partition "
                        "(root=/dev/vda2, root=PARTUUID=..., root=LABEL=...)")
    delay = _seconds(cmdline, "rootdelay", 0.0)
    if delay:
        import time

        time.sleep(delay)
    timeout = None if cmdline.has("rootwait") else _seconds(cmdline, "bankboot.roottimeout", DEFAULT_ROOT_TIMEOUT)
    with log.step(f"wait for banks partition {spec}"):
        dev = wait_for_device(spec, timeout, "banks partition")
    fstype = cmdline.get("rootfstype") or "ext4"
    os.makedirs(BANKS, exist_ok=True)
    with log.step(f"mount {dev} on {BANKS}"):
        try:
            mount(dev, BANKS, fstype, MS_NOSUID | MS_NODEV)
        except OSError as e:
            raise BootError(f"cannot mount the banks partition {dev} ({spec}) as {fstype}: {e.strerror}") from None
    return Layout(BANKS)


def choose_image(layout: Layout) -> tuple[str, str]:
    """(image id, why). For now the image `current` names."""
    image = layout.pointer("current")
    if image is None:
        found = ", ".join(layout.images()) or "none"
        raise BootError(f"{layout.overlay}/current does not exist: nothing to boot (images present: {found})")
    return image, "current"


def mount_image(layout: Layout, image: str) -> None:
    from initfs.loop import attach_readonly

    layout.check_image(image)
    squashfs = layout.squashfs(image)
    os.makedirs(LOWER, exist_ok=True)
    with log.step(f"mount {squashfs}"):
        dev, fd = attach_readonly(squashfs)
        try:
            mount(dev, LOWER, "squashfs", MS_RDONLY | MS_NODEV)
        except OSError as e:
            raise BootError(f"image {image}: cannot mount {squashfs} (through {dev}): {e.strerror}; "
                            f"the image is damaged or not a squashfs") from None
        finally:
            os.close(fd)
    layout.prepare_image_dirs(image)
    opts = f"lowerdir={LOWER},upperdir={layout.sub(image, 'upper')},workdir={layout.sub(image, 'work')}"
    os.makedirs(NEWROOT, exist_ok=True)
    with log.step("mount overlay"):
        try:
            mount("overlay", NEWROOT, "overlay", 0, opts)
        except OSError as e:
            raise BootError(f"image {image}: cannot mount the overlay ({opts}): {e.strerror}") from None


def mount_userdata(cmdline: Cmdline, layout: Layout) -> None:
    spec = cmdline.get("bankboot.userdata")
    target = f"{NEWROOT}/userdata"
    if not spec:
        log.log("no bankboot.userdata= on the command line: no /userdata")
        return
    os.makedirs(target, exist_ok=True)
    if spec == "banks":
        src = layout.userdata_dir()
        os.makedirs(src, exist_ok=True)
        mount(src, target, None, MS_BIND)
        return
    timeout = None if cmdline.has("rootwait") else _seconds(cmdline, "bankboot.roottimeout", DEFAULT_ROOT_TIMEOUT)
    dev = wait_for_device(spec, timeout, "userdata partition")
    try:
        mount(dev, target, cmdline.get("bankboot.userdatafstype") or "ext4", MS_NOSUID | MS_NODEV)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return
        raise BootError(f"cannot mount the userdata partition {dev} ({spec}): {e.strerror}") from None


def boot_image(cmdline: Cmdline, argv: list[str]) -> NoReturn:
    from initfs.switchroot import init_exists, switch_root

    try:
        layout = mount_banks(cmdline)
        image, why = choose_image(layout)
        log.log(f"booting image {image} ({why})")
        mount_image(layout, image)
    except LayoutError as e:
        raise BootError(str(e)) from None
    init = cmdline.get("init") or "/sbin/init"
    if not init_exists(NEWROOT, init):
        raise BootError(f"image {image} has no executable {init}")
    mount_userdata(cmdline, layout)
    switch_root(NEWROOT, init, argv)
