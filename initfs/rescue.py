"""When nothing boots: `bankboot.rescue=reboot` (field boards) waits a moment so the reason can be read,
then reboots to try again; `shell` (development boards) starts busybox sh on the console, again whenever
it exits. PID 1 must never return (the kernel would panic), so neither does."""

from __future__ import annotations

import os
import time

from initfs import log
from initfs.switchroot import clean_environ

TYPE_CHECKING = False  # typing costs a quarter of a second to import under TCG: only for the checker
if TYPE_CHECKING:
    from typing import NoReturn

    from overlay_layout.records import Tried

BUSYBOX = "/bin/busybox"
PS1 = r"(bankboot rescue) \w # "
REBOOT_DELAY = 10.0


def give_up(reason: str, tried: list[Tried], mode: str) -> NoReturn:
    """The end of every path on which no image boots: every candidate tried and why, then the board's
    (or bankboot.rescue=) choice."""
    from initfs.menu import stop_listening

    stop_listening()
    log.error(reason)
    for t in tried:
        log.error(f"  tried {t['image']} ({t['why']}): {t['error']}")
    if mode == "reboot":
        # A sealed build never gives a shell, so it does not offer one.
        offer = "" if _sealed() else " (bankboot.rescue=shell gives a shell instead)"
        reboot_now(f"nothing could be booted; rebooting in {REBOOT_DELAY:g} s to try again{offer}", REBOOT_DELAY)
    rescue_shell("nothing could be booted")


def reboot_now(reason: str, delay: float = 0.0) -> NoReturn:
    from initfs.syscalls import reboot

    log.error(reason)
    time.sleep(delay)
    os.sync()
    try:
        reboot()
    except OSError as e:
        log.error(f"reboot failed: {e.strerror}")
    rescue_shell("reboot failed")


def _spawn_shell(env: dict[str, str]) -> int:
    # setsid + cttyhack give the shell the real console device as its controlling terminal, so Ctrl-C
    # and job control work (/dev/console cannot be a controlling tty).
    return os.posix_spawn(BUSYBOX, [BUSYBOX, "setsid", BUSYBOX, "cttyhack", "/bin/sh", "-l"], env)


def _install_applets(env: dict[str, str]) -> None:
    """The initramfs carries busybox without its applet links (every boot would unpack four hundred): the
    rescue shell makes them now, so `ls`, `mount`, `modprobe` work at its prompt. Best effort."""
    try:
        pid = os.posix_spawn(BUSYBOX, [BUSYBOX, "--install", "-s"], env)
        os.waitpid(pid, 0)
    except OSError as e:
        log.error(f"cannot make busybox's applet links ({e.strerror}); call applets as `busybox NAME`")


def _sealed() -> bool:
    from overlay_layout.contract import InitramfsConf

    return InitramfsConf.read().sealed


def rescue_shell(reason: str) -> NoReturn:
    from initfs.menu import stop_listening

    stop_listening()
    log.error(reason)
    if _sealed():  # never a shell on a sealed build: keep trying to reboot (a watchdog resets us too)
        while True:
            log.error("sealed build: no rescue shell; trying to reboot again in 60 s")
            time.sleep(60)
            try:
                from initfs.syscalls import reboot

                os.sync()
                reboot()
            except OSError:
                pass
    env = clean_environ()
    env["PS1"] = PS1
    env.setdefault("HOME", "/")
    env.setdefault("TERM", "linux")
    _install_applets(env)
    while True:
        log.log("starting a rescue shell on the console (exit it to start a new one)")
        try:
            pid = _spawn_shell(env)
        except OSError as e:
            log.error(f"cannot start {BUSYBOX}: {e.strerror}; waiting forever")
            while True:
                time.sleep(3600)
        # As PID 1 we are every orphan's parent: reap them all until our shell is the one that ended.
        while True:
            try:
                done, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if done == pid:
                break
        time.sleep(0.2)
