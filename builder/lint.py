"""What `bankboot image` checks in a root filesystem before it becomes a bank (like `bootc container lint`):
files a container runtime left behind, the init, kernels, /var/run, /boot, the image's kernel arguments.
Each finding names the path and the fix. Warnings are printed and the image is built; `--strict` refuses
them; errors always refuse (the image could not boot as asked).

It reads the tree through a directory: the rootfs itself, or the skeleton of an image that came as layers
(builder/skeleton.py: sizes and modes are real there, contents only where filled)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from builder.elf import ElfError, resolve_in_root
from overlay_layout.manifest import KERNEL_FILES

MODULES = "/usr/lib/modules"
KARGS_D = "/usr/lib/bootc/kargs.d"
# Created by docker/podman for the container's own run, never by the image's build: systemd takes the first
# two as a sign it runs in a container; the empty files are what a runtime bind-mounts its own over.
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")
RUNTIME_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


@dataclass(frozen=True)
class Finding:
    severity: str  # "warning" or "error"
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


def _lstat(root: Path, path: str) -> os.stat_result | None:
    try:
        return os.lstat(root / path.lstrip("/"))
    except OSError:
        return None


def _resolved(root: Path, path: str) -> str | None:
    try:
        return resolve_in_root(root, path)
    except ElfError:
        return None


def image_kernels(root: Path) -> list[str]:
    """The kernel releases the image carries the bootc way: /usr/lib/modules/<release>/vmlinuz."""
    real = _resolved(root, MODULES)
    d = root / (real or MODULES).lstrip("/")
    if not d.is_dir():
        return []
    return sorted(e.name for e in d.iterdir() if e.is_dir() and (e / "vmlinuz").is_file())


def check_init(root: Path, init: str = "/sbin/init") -> list[Finding]:
    real = _resolved(root, init)
    st = _lstat(root, real) if real else None
    if real is None or st is None:
        return [Finding("error", init, "missing: the image has no init to boot (install one, e.g. Debian's "
                                       "systemd-sysv, or link /sbin/init to the program that should run as PID 1)")]
    shown = init if real == init else f"{init} (-> {real})"
    if not stat.S_ISREG(st.st_mode):
        return [Finding("error", shown, "not a regular file: the kernel cannot run it as PID 1")]
    if not st.st_mode & 0o111:
        return [Finding("error", shown, f"not executable (mode {stat.S_IMODE(st.st_mode):o}): chmod +x it in "
                                        f"the image's build")]
    return []


def check_runtime_files(root: Path) -> list[Finding]:
    out = []
    for path in CONTAINER_MARKERS:
        if _lstat(root, path) is not None:
            out.append(Finding("warning", path, "made by a container runtime, not by the image's build; on a "
                                                "device systemd would think it runs in a container: delete it "
                                                "(in the Containerfile, or from the tarball)"))
    for path in RUNTIME_FILES:
        st = _lstat(root, path)
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == 0:
            out.append(Finding("warning", path, "empty: a container runtime's placeholder for its own bind mount; "
                                                "write what the device needs there, or delete it"))
    return out


def check_var_run(root: Path) -> list[Finding]:
    st = _lstat(root, "/var/run")
    if st is not None and stat.S_ISDIR(st.st_mode):
        return [Finding("warning", "/var/run", "a directory: it must be a symlink to /run, or what programs write "
                                               "there is not where others look for it (ln -s ../run /var/run)")]
    return []


def check_boot(root: Path, kernel_from_image: bool) -> list[Finding]:
    """Files under /boot are never booted by bankboot (the board's boot partition has the kernel; an image's
    own kernel lives in /boot/bankboot, put there by bankboot)."""
    boot = root / "boot"
    if boot.is_symlink() or not boot.is_dir():
        return []
    ours = KERNEL_FILES["image"].split("/")[2]
    unused = sorted(str(p.relative_to(root)) for p in boot.rglob("*")
                    if not p.is_dir() and p.relative_to(boot).parts[0] != ours)
    if not unused:
        return []
    shown = ", ".join(f"/{u}" for u in unused[:4]) + (f" and {len(unused) - 4} more" if len(unused) > 4 else "")
    fix = "" if kernel_from_image else ("; to boot the image's own kernel, keep it in "
                                        "/usr/lib/modules/<release>/vmlinuz and build with --kernel image")
    return [Finding("warning", "/boot", f"{shown}: bankboot does not boot files from the image's /boot (the "
                                        f"kernel comes from the board's boot partition, or --kernel): they only take "
                                        f"space; delete them{fix}")]


def check_kernels(root: Path, kernel_from_image: bool) -> list[Finding]:
    kernels = image_kernels(root)
    if kernel_from_image and len(kernels) != 1:
        what = f"holds {', '.join(kernels)}" if kernels else "holds no <release>/vmlinuz"
        return [Finding("error", MODULES, f"{what}: --kernel image takes exactly one kernel from there (keep one "
                                          f"kernel package in the image, or give --kernel FILE)")]
    kargs = root / KARGS_D.lstrip("/")
    if not kernel_from_image and kargs.is_dir() and any(kargs.glob("*.toml")):
        return [Finding("warning", KARGS_D, "kernel arguments for the image's own kernel, unused without "
                                            "--kernel image (the board's command line applies)")]
    return []


def lint(root: Path, kernel_from_image: bool = False) -> list[Finding]:
    return [*check_init(root), *check_runtime_files(root), *check_var_run(root), *check_boot(root, kernel_from_image),
            *check_kernels(root, kernel_from_image)]
