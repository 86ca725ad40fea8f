"""The first-boot self-test of a trial image, run by the init after the image is mounted and before
switching to it: its init must be a program for this machine, it must carry the kernel's modules when
the board says so, and its own checks (/etc/bankboot/selftest.d/*) must pass, run chrooted in it."""

from __future__ import annotations

import os
import signal
import time

from initfs import log
from initfs.environ import clean_environ
from initfs.switchroot import resolve_in
from initfs.syscalls import MNT_DETACH, MS_BIND, MS_REC, mount, umount

SELFTEST_DIR = "/etc/bankboot/selftest.d"
ELF_MACHINES = {"x86_64": (62, 2), "aarch64": (183, 2), "armv7l": (40, 1), "armv8l": (40, 1), "armv6l": (40, 1)}
MACHINE_NAMES = {62: "x86_64", 183: "aarch64", 40: "arm", 3: "i386"}


class SelfTestError(RuntimeError):
    pass


def check_init(newroot: str, init: str) -> None:
    host = resolve_in(newroot, init)
    if host is None:
        raise SelfTestError(f"too many symlinks resolving {init} in the image")
    try:
        with open(host, "rb") as f:
            head = f.read(20)
    except OSError as e:
        raise SelfTestError(f"the image's {init} cannot be read: {e.strerror}") from None
    if head[:2] == b"#!":
        return  # a script: its interpreter is the image's business
    if head[:4] != b"\x7fELF" or len(head) < 20:
        raise SelfTestError(f"the image's {init} is neither an ELF program nor a script")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    want = ELF_MACHINES.get(os.uname().machine)
    if want and (machine != want[0] or head[4] != want[1]):
        raise SelfTestError(f"the image's {init} is built for {MACHINE_NAMES.get(machine, machine)} "
                            f"({32 * head[4]}-bit), this kernel runs {os.uname().machine}")


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
        for target in reversed(bound):
            try:
                umount(target, MNT_DETACH)
            except OSError:
                pass
    return len(checks)


def _run_one(newroot: str, path: str, timeout: float) -> None:
    env = clean_environ()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the check, in the image
        try:
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
        if time.monotonic() - start > timeout:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise SelfTestError(f"self-test {path} did not finish within {timeout:.0f} s")
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    log.log(f"self-test {path}: exit {code} ({time.monotonic() - start:.2f} s)")
    if code != 0:
        raise SelfTestError(f"self-test {path} failed with exit status {code}")


def self_test(newroot: str, init: str, need_modules: bool, timeout: float) -> str:
    check_init(newroot, init)
    if need_modules:
        check_modules(newroot)
    n = run_checks(newroot, timeout)
    return f"passed ({n} image checks)"
