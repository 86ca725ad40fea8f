"""A real Debian 12 root filesystem for the image tests, made by mmdebstrap into a tarball and kept in the
shared cache (build/cache/rootfs), so it is built once per recipe, not per run (about five minutes).

Building an arm64 root filesystem on an x86_64 host runs arm64 maintainer scripts: under qemu-user, which
needs binfmt_misc. This machine has none registered, and registering qemu globally would change what every
other process here runs. Since Linux 6.7 a user namespace can mount a binfmt_misc of its own: mmdebstrap
runs in one (uids 0-65535 mapped to themselves, so ownership in the tarball is real), with qemu registered
only there."""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from builder.paths import cache_dir

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("systemd-sysv",)
EPOCH = 1700000000  # SOURCE_DATE_EPOCH for mmdebstrap: the same recipe gives the same tarball
HOSTNAME = "bankboot-debian"
QEMU_BINFMT = {"arm64": "/usr/lib/binfmt.d/qemu-aarch64.conf", "armhf": "/usr/lib/binfmt.d/qemu-arm.conf"}
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000

# Run in the child: a private mount namespace and binfmt_misc, qemu registered, then the command.
_INNER = r"""
import os, subprocess, sys
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=True)
with open(sys.argv[1]) as f:
    rule = f.read().strip()
with open("/proc/sys/fs/binfmt_misc/register", "w") as f:
    f.write(rule)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def recipe(arch: str) -> str:
    return repr((SUITE, MIRROR, PACKAGES, EPOCH, HOSTNAME, arch))


def debian_rootfs(arch: str = "arm64") -> Path:
    """The tarball, built when this recipe has none yet (one builder at a time: a lock in the cache)."""
    out_dir = cache_dir() / "rootfs"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"debian12-{arch}-{hashlib.sha256(recipe(arch).encode()).hexdigest()[:12]}.tar"
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.is_file():
            build(arch, out)
    return out


def build(arch: str, out: Path) -> None:
    tmp = out.with_name(out.name + ".part")
    cmd = ["mmdebstrap", "--mode=root", "--format=tar", "--variant=minbase", f"--architectures={arch}",
           "--skip=check/qemu", f"--include={','.join(PACKAGES)}",
           f"--customize-hook=echo {HOSTNAME} > \"$1/etc/hostname\"", SUITE, str(tmp), MIRROR]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    status, log = in_user_namespace(cmd, QEMU_BINFMT[arch], env)
    if status != 0 or not tmp.is_file():
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
        raise RuntimeError(f"mmdebstrap failed (exit {status}):\n{log[-3000:]}")
    tmp.rename(out)


def in_user_namespace(cmd: list[str], binfmt_rule: Path | str, env: dict[str, str]) -> tuple[int, str]:
    """Run `cmd` as uid 0 of a new user namespace (uids and gids 0-65535 mapped to the same ones outside:
    this needs root outside) with its own mount and pid namespaces and binfmt_misc."""
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    log_r, log_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: unshare, wait for its id maps, then fork the command as pid 1 of its namespace
        try:
            os.dup2(log_w, 1)
            os.dup2(log_w, 2)
            if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            proc = subprocess.run([sys.executable, "-c", _INNER, str(binfmt_rule), *cmd], env=env)
            os._exit(proc.returncode)
        except BaseException as e:
            os.write(2, f"{e}\n".encode())
            os._exit(127)
    os.close(log_w)
    os.read(ready_r, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write("0 0 65536\n")
    os.write(go_w, b"x")
    chunks = []
    while data := os.read(log_r, 65536):
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    for fd in (ready_r, ready_w, go_r, go_w, log_r):
        os.close(fd)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")
