"""The first-boot self-test of a trial image, run by the init after the image is mounted (and its init
passed the preflight) and before switching to it: it must carry the kernel's modules when the board says
so, and its own checks (/etc/bankboot/selftest.d/*) must pass, run chrooted in it. Whatever a check
leaves running is killed before the image is used or unmounted (a leftover would hold the mounts busy)."""

from __future__ import annotations

import os
import signal
import time

from initfs import log
from initfs.switchroot import clean_environ
from initfs.syscalls import MNT_DETACH, MS_BIND, MS_REC, mount, umount
from overlay_layout.contract import SELFTEST_DIR
from overlay_layout.errors import BankbootError


class SelfTestError(BankbootError):
    pass


def check_modules(newroot: str) -> None:
    release = os.uname().release
    for base in ("/lib/modules", "/usr/lib/modules"):
        if os.path.isdir(f"{newroot}{base}/{release}"):
            return
    raise SelfTestError(f"the image has no kernel modules for the running kernel {release} "
                        f"(/lib/modules/{release} is missing) and this board needs them")


def run_checks(newroot: str, timeout: float) -> int:
    """Run every executable in the image's selftest.d, chrooted, each within `timeout` seconds."""
    d = newroot + SELFTEST_DIR
    if not os.path.isdir(d):
        return 0
    checks = sorted(n for n in os.listdir(d) if os.access(f"{d}/{n}", os.X_OK) and not os.path.isdir(f"{d}/{n}"))
    if not checks:
        return 0
    bound = []
    try:
        for m in ("/proc", "/sys", "/dev"):
            os.makedirs(newroot + m, exist_ok=True)
            mount(m, newroot + m, None, MS_BIND | MS_REC)
            bound.append(newroot + m)
        for name in checks:
            _run_one(newroot, f"{SELFTEST_DIR}/{name}", timeout)
    finally:
        kill_leftovers()
        for target in reversed(bound):
            try:
                umount(target, MNT_DETACH)
            except OSError:
                pass
    return len(checks)


def kill_leftovers() -> int:
    """Kill every process but us (PID 1; kernel threads ignore signals) and reap them: at this point of
    the boot every other process is something a self-test started. Returns how many were reaped."""
    if os.getpid() != 1:
        return 0  # never outside an initramfs: kill(-1) would take the whole machine
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        return 0
    reaped = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.01)
            continue
        reaped += 1
    if reaped:
        log.log(f"self-test: killed {reaped} process(es) a check left behind")
    return reaped


def _run_one(newroot: str, path: str, timeout: float) -> None:
    """Run one check and wait for it: woken by its SIGCHLD (blocked here, taken with sigtimedwait), not by
    polling, so a check that takes a millisecond costs the boot a millisecond (a 20 ms poll made the
    sample's one-line check cost 70 ms of every trial's first boot)."""
    env = clean_environ()
    start = time.monotonic()
    chld = {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, chld)
    try:
        pid = os.fork()
        if pid == 0:  # the check, in the image, with the signal mask it would have had
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, chld)
                os.chroot(newroot)
                os.chdir("/")
                os.setsid()
                os.execve(path, [path], env)
            except BaseException as e:
                os.write(2, f"bankboot: cannot run {path}: {e}\n".encode())
            os._exit(127)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                break
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise SelfTestError(f"self-test {path} did not finish within {timeout:.0f} s")
            signal.sigtimedwait(chld, left)  # a child of a check's that exits wakes us too: waitpid says
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, chld)
    code = os.waitstatus_to_exitcode(status)
    log.log(f"self-test {path}: exit {code} ({time.monotonic() - start:.2f} s)")
    if code != 0:
        raise SelfTestError(f"self-test {path} failed with exit status {code}")


def self_test(newroot: str, need_modules: bool, timeout: float) -> str:
    if need_modules:
        check_modules(newroot)
    n = run_checks(newroot, timeout)
    return f"passed ({n} image checks)"
