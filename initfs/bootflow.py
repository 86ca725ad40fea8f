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


def device_timeout(cmdline: Cmdline) -> float | None:
    """How long to wait for the banks and userdata devices: for ever with rootwait."""
    return None if cmdline.has("rootwait") else _seconds(cmdline, "bankboot.roottimeout", DEFAULT_ROOT_TIMEOUT)


def mount_banks(cmdline: Cmdline) -> Layout:
    spec = cmdline.get("root")
    if not spec:
        raise BootError("no root= on the kernel command line: it names the banks partition "
                        "(root=/dev/vda2, root=PARTUUID=..., root=LABEL=...)")
    delay = _seconds(cmdline, "rootdelay", 0.0)
    if delay:
        import time

        time.sleep(delay)
    with log.step(f"wait for banks partition {spec}"):
        dev = wait_for_device(spec, device_timeout(cmdline), "banks partition")
    fstype = cmdline.get("rootfstype") or "ext4"
    os.makedirs(BANKS, exist_ok=True)
    with log.step(f"mount {dev} on {BANKS}"):
        try:
            mount(dev, BANKS, fstype, MS_NOSUID | MS_NODEV)
        except OSError as e:
            raise BootError(f"cannot mount the banks partition {dev} ({spec}) as {fstype}: {e.strerror}") from None
    return Layout(BANKS)


def menu_selection(cmdline: Cmdline, banks) -> tuple[str | None, str]:
    """bankboot.select= wins; otherwise the console prompt (ESC opens the menu)."""
    select = cmdline.get("bankboot.select")
    if select:
        return select, "bankboot.select"
    timeout = _seconds(cmdline, "bankboot.timeout", 2.0) or 0.0
    if timeout <= 0:
        return None, ""
    from initfs.menu import prompt
    from overlay_layout import bootlog

    last: dict[str, str] = {}
    for r in bootlog.read_log(banks.root):
        last[r.get("image", "")] = r.get("outcome") or r.get("why", "")
    entries = banks.status()["images"]
    for e in entries:
        e["last_boot"] = last.get(e["id"])
    with log.step("console prompt"):
        return prompt(entries, timeout), "console menu"


def verify_image(layout: Layout, image: str, full: bool) -> dict:
    """The image's manifest must be signed by a trusted key (checked every boot: cheap); on a trial's first
    boot the whole squashfs and hash tree are also hashed against it. Later reads are checked by dm-verity."""
    from initfs.version import VERSION
    from overlay_layout.manifest import parse_manifest
    from overlay_layout.trust import Policy, TrustError

    path = layout.manifest_path(image)
    try:
        with open(path, "rb") as f:
            manifest = parse_manifest(f.read(), path)
    except OSError as e:
        raise BootError(f"image {image}: cannot read {path}: {e.strerror}") from None
    if manifest["id"] != image:
        raise BootError(f"image {image}: {path} describes image {manifest['id']}")
    try:
        with log.step("verify manifest signature"):
            who = Policy.load("/etc/bankboot").check(manifest, VERSION)
    except TrustError as e:
        raise BootError(f"verification failed: {e}") from None
    log.log(f"image {image}: manifest signed by {who}")
    if full:
        with log.step(f"hash {image}"):
            files = [(layout.squashfs(image), manifest["sha256"])]
            if "verity" in manifest:
                files.append((layout.verity(image), manifest["verity"]["sha256"]))
            for file, want in files:
                got = _sha256(file)
                if got != want:
                    raise BootError(f"verification failed: {file} has sha256 {got}, the signed manifest says "
                                    f"{want}: the image was changed after it was signed")
    return manifest


def _sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as e:
        raise BootError(f"verification failed: cannot read {path}: {e.strerror}") from None
    return h.hexdigest()


def mount_image(layout: Layout, image: str, full_check: bool = False) -> None:
    from initfs.loop import attach_readonly

    layout.check_image(image)
    manifest = verify_image(layout, image, full_check)
    squashfs = layout.squashfs(image)
    os.makedirs(LOWER, exist_ok=True)
    with log.step(f"mount {squashfs}"):
        if "verity" in manifest:
            from initfs.dmverity import VerityError, open_verity

            try:
                dev, fd = open_verity(f"bankboot-{image}", squashfs, layout.verity(image), manifest["verity"]), None
            except VerityError as e:
                raise BootError(f"image {image}: dm-verity: {e}") from None
        elif "signature" in manifest:
            raise BootError(f"image {image}: signed but without dm-verity data: refusing to read it unchecked")
        else:
            dev, fd = attach_readonly(squashfs)
        try:
            mount(dev, LOWER, "squashfs", MS_RDONLY | MS_NODEV)
        except OSError as e:
            raise BootError(f"image {image}: cannot mount {squashfs} (through {dev}): {e.strerror}; "
                            f"the image is damaged or not a squashfs") from None
        finally:
            if fd is not None:
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
    dev = wait_for_device(spec, device_timeout(cmdline), "userdata partition")
    try:
        mount(dev, target, cmdline.get("bankboot.userdatafstype") or "ext4", MS_NOSUID | MS_NODEV)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return
        raise BootError(f"cannot mount the userdata partition {dev} ({spec}): {e.strerror}") from None


def release_image(image: str) -> None:
    """Undo whatever of mount_image happened: overlay, squashfs, the verity mapping (loops clear themselves)."""
    from initfs.dmverity import close_verity
    from initfs.syscalls import umount

    for target in (NEWROOT, LOWER):
        if os.path.ismount(target):
            try:
                umount(target)
            except OSError as e:
                raise BootError(f"cannot unmount {target} to fall back: {e.strerror}") from None
    close_verity(f"bankboot-{image}")


def prepare(layout: Layout, image: str, init: str, trial: bool, cmdline: Cmdline, config: dict[str, str]) -> str:
    """Mount the image (verified) and, for a trial, self-test it. Returns the self-test result."""
    from initfs.selftest import self_test
    from initfs.switchroot import init_exists

    mount_image(layout, image, full_check=trial)
    if not init_exists(NEWROOT, init):
        raise BootError(f"image {image} has no executable {init}")
    if not trial:
        return "not run (not a trial)"
    with log.step("self-test"):
        result = self_test(NEWROOT, init, config.get("image_modules") == "yes",
                           _seconds(cmdline, "bankboot.selftest_timeout", 60.0) or 60.0)
    log.log(f"self-test of {image}: {result}")
    return result


def boot_image(cmdline: Cmdline, argv: list[str], config: dict[str, str]) -> NoReturn:
    import json
    import time

    from initfs.kit import install_kit
    from initfs.selftest import SelfTestError
    from initfs.switchroot import switch_root
    from overlay_layout import bootlog
    from overlay_layout.state import Banks

    init = cmdline.get("init") or "/sbin/init"
    record: dict = {"time": int(time.time()), "kernel": os.uname().release}
    try:
        layout = mount_banks(cmdline)
        banks = Banks(BANKS)
        select, how = menu_selection(cmdline, banks)
        choice = banks.choose_boot(select)
        for w in banks.warnings:
            log.error(w)
        image, why, trial = choice.image, (f"{how}: {choice.why}" if select else choice.why), choice.trial
        log.log(f"booting image {image} ({why})")
        done = banks.apply_reset(image)
        if done:
            log.log(f"{image}: {done}")
        try:
            record["selftest"] = prepare(layout, image, init, trial, cmdline, config)
        except (BootError, SelfTestError, LayoutError, OSError) as e:
            release_image(image)
            if trial:
                # The trial is given up in this same boot: marked bad with the reason, current boots.
                reason = f"self-test failed: {e}" if isinstance(e, SelfTestError) else f"trial boot failed: {e}"
                banks.mark_bad(image, reason)
                record["selftest"] = f"failed: {reason}"
                fallback = banks.choose_boot(None)
                new, trial = fallback.image, fallback.trial
            else:
                # current is good by construction, so this is damage on disk: boot previous, this once.
                reason = f"current failed: {e}"
                new = banks.layout.pointer("previous")
                if new is None or new == image or select:
                    raise
            log.error(f"image {image}: {reason}; booting {new} instead")
            record["fallback_from"] = {"image": image, "reason": reason}
            image, why = new, f"fallback after {image}: {reason}"
            prepare(layout, image, init, trial, cmdline, config)
        if trial and cmdline.get("bankboot.watchdog"):
            from initfs.watchdog import arm

            log.log(arm(int(_seconds(cmdline, "bankboot.watchdog", 0) or 0)))
        record.update(image=image, why=why, trial=trial, outcome="trial not confirmed" if trial else "booted")
        with open(f"{RUN}/booted", "w") as f:
            json.dump({"image": image, "why": why, "trial": trial}, f)
        with log.step("install bankctl"):
            install_kit(layout, image, config)
        bootlog.append_record(BANKS, record)
    except LayoutError as e:
        raise BootError(str(e)) from None
    mount_userdata(cmdline, layout)
    switch_root(NEWROOT, init, argv)
