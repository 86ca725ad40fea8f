"""bankboot's init: runs as PID 1 from the initramfs."""

from __future__ import annotations

import os
import sys

from initfs import VERSION, log
from overlay_layout.contract import InitramfsConf

# Only what the banner needs is imported before it (typing and the rest come after): the time
# from the kernel starting /init to the banner is Python's start-up, and people judge the init by it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

def mount_early() -> None:
    """/proc /sys /dev /run, before anything else."""
    import errno

    from initfs.syscalls import MS_NODEV, MS_NOEXEC, MS_NOSUID, mount

    early = [("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
             ("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
             ("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
             ("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")]
    for source, target, fstype, flags, data in early:
        os.makedirs(target, exist_ok=True)
        try:
            mount(source, target, fstype, flags, data)
        except OSError as e:
            if e.errno != errno.EBUSY:  # already mounted (by a kernel with DEVTMPFS_MOUNT=y)
                raise


def banner(config: InitramfsConf) -> None:
    u = os.uname()
    board = config.board or "unknown board"
    kind = "sealed build" if config.sealed else \
        "DEVELOPMENT build (unsealed: init= is obeyed and a failed boot can give a root shell)"
    log.log(f"bankboot {VERSION} init on Linux {u.release} ({u.machine}, board {board}), {kind}")
    log.mark("banner")


def boot() -> NoReturn:
    config = InitramfsConf.read()
    try:
        with log.step("mount /proc /sys /dev /run"):
            mount_early()
    finally:  # the banner goes into the kernel log too (its timestamp is what `make bench` reads)
        log.open_kmsg()
        banner(config)
    from initfs.cmdline import Cmdline
    from initfs.options import Options

    opts = Options(Cmdline.from_proc(), {"bankboot.rescue": config.rescue}, config.sealed)
    log.debug = opts.get("bankboot.debug")
    log.stepping = opts.get("bankboot.step")
    for w in opts.warnings:
        log.error(w)
    if opts.get("bankboot.kexec"):  # a kexec's second stage (docs/lifecycle.md), if it really is one
        from initfs.kexec import check_pin

        opts.values["bankboot.kexec"] = check_pin(opts.get("bankboot.kexec"), opts.get("bankboot.loader"))
    # No prompt in a kexec's second stage: the person had their window in the loader.
    if not opts.get("bankboot.select") and not opts.get("bankboot.kexec") and opts.get("root") is not None:
        from initfs.menu import listen

        with log.step("open the ESC window"):
            try:
                listen(opts.get("bankboot.timeout"))
            except Exception as e:  # the prompt is a convenience: it must never stop a boot
                log.error(f"console prompt failed ({e}); booting as planned")
    with log.step("load modules"):
        from initfs.modules import load_modules, read_order

        count = load_modules(os.uname().release, read_order())
    log.log(f"loaded {count} kernel modules")
    from initfs.rescue import give_up  # imported now: after the hand-over starts, nothing more can be

    if opts.get("root") is None:
        give_up("no root= on the kernel command line: nothing to boot", [], opts.get("bankboot.rescue"))
    from initfs.bootflow import boot_image

    boot_image(opts, sys.argv[1:], config)


def main() -> NoReturn:
    if os.getpid() != 1:
        sys.stderr.write("bankboot init: must run as PID 1 (from an initramfs)\n")
        sys.exit(2)
    try:
        boot()
    except BaseException as e:  # PID 1 must never die: everything ends in the board's rescue policy
        import traceback

        detail = "".join(traceback.format_exception(e)).rstrip()
        log.error(f"unexpected failure: {type(e).__name__}: {e}")
        log.log(detail)
        from initfs.rescue import give_up

        give_up(f"boot failed: {e}", [], _rescue_mode())


def _rescue_mode() -> str:
    """bankboot.rescue= if it can still be read, else the board's default: this runs after a failure. A kexec's
    second stage always reboots: the loader then counts the try and falls back (docs/lifecycle.md)."""
    try:
        from initfs.cmdline import Cmdline
        from initfs.options import Options

        config = InitramfsConf.read()
        opts = Options(Cmdline.from_proc(), {"bankboot.rescue": config.rescue}, config.sealed)
        return "reboot" if opts.get("bankboot.kexec") else opts.get("bankboot.rescue")
    except BaseException:
        return "reboot"
