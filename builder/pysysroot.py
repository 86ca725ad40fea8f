"""A Debian Python 3.11 for the target architecture, unpacked rootless into a sysroot, with PyInstaller
for that architecture beside it. PyInstaller is not a cross-compiler: it must run under the target's own
Python, so for ARM it runs under qemu-user (`qemu-aarch64-static -L SYSROOT`); for the host's own
architecture the same sysroot runs natively through its own ld.so. Either way the frozen init and the
libraries copied next to it come from the same Debian sysroot.

PyInstaller spawns helpers (sys.executable, ldd, objdump, strip): wrapper scripts in a tools dir make
each of them something the host can exec, pointed at the sysroot (see ../shared/facts.md)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder import debian
from builder.arch import Arch
from builder.elf import read_elf, resolve_in_root
from builder.errors import BuildError
from builder.paths import cache_dir, fetch_hint
from builder.run import find_tool, run, target_runner

PYTHON_PACKAGES = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libpython3.11",
    "libc6", "libssl3", "libexpat1", "zlib1g", "libbz2-1.0", "libcrypt1", "libffi8", "liblzma5",
    "libncursesw6", "libreadline8", "libtinfo6", "libuuid1", "libsqlite3-0", "libgcc-s1",
    # ed25519 signatures for the init and bankctl: libsodium, called with ctypes (overlay_layout/ed25519.py;
    # 0.26 MB in the initramfs). PyNaCl and cffi stay in the sysroot but are kept out of the freeze.
    "python3-nacl", "python3-cffi-backend", "libsodium23",
]
PYINSTALLER_PIN = "pyinstaller==6.22.3"
PYTHON = "usr/bin/python3.11"


class SysrootError(BuildError):
    pass


@dataclass(frozen=True)
class PySysroot:
    arch: Arch
    root: Path  # the unpacked Debian packages
    site: Path  # PyInstaller and its dependencies for the target
    tools: Path  # wrapper scripts (python, ldd, objdump, ...)
    stamp: str  # what went in: package versions and the PyInstaller pin

    @property
    def python(self) -> Path:
        return self.tools / "python"

    def env(self) -> dict[str, str]:
        """Environment for running PyInstaller: wrappers first on PATH, the sysroot's libraries on
        LD_LIBRARY_PATH (PyInstaller looks for libpython there; without it, it would take the host's)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = f"{self.tools}:{env.get('PATH', '/usr/bin:/bin')}"
        env["LD_LIBRARY_PATH"] = ":".join(str(self.root / d.lstrip("/")) for d in self.lib_dirs())
        env["PYINSTALLER_CONFIG_DIR"] = str(self.root.parent / f"pyinstaller-config-{self.arch.debian}")
        return env

    def lib_dirs(self) -> list[str]:
        t = self.arch.triplet
        return [f"/lib/{t}", f"/usr/lib/{t}", "/usr/lib"]


def sysroot_dir(arch: Arch) -> Path:
    return cache_dir() / "pysysroot" / arch.debian


def fetch_sysroot(arch: Arch) -> PySysroot:
    """Download, unpack and set up the sysroot; a no-op when the stamp says it is current."""
    base = sysroot_dir(arch)
    versions = debian.package_versions(PYTHON_PACKAGES, arch.debian)
    stamp = "".join(f"{n} {versions[n]}\n" for n in PYTHON_PACKAGES) + PYINSTALLER_PIN + "\n"
    stamp_file = base / "stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        return locate_sysroot(arch)
    debs = debian.download(PYTHON_PACKAGES, arch.debian, cache_dir() / "debs" / arch.debian)
    root = debian.unpack(debs, base / "root", stamp)
    site = base / "site"
    _install_pyinstaller(arch, site)
    sysroot = PySysroot(arch, root, site, base / "tools", stamp)
    _write_tools(sysroot)
    stamp_file.write_text(stamp)
    return sysroot


def locate_sysroot(arch: Arch) -> PySysroot:
    base = sysroot_dir(arch)
    if not (base / "stamp").is_file():
        raise SysrootError(f"the Python sysroot for {arch.debian} is not set up yet ({fetch_hint()})")
    return PySysroot(arch, base / "root", base / "site", base / "tools", (base / "stamp").read_text())


def _pip(*args: str) -> None:
    run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], error=SysrootError,
        what=f"pip {' '.join(args)}")


def _install_pyinstaller(arch: Arch, site: Path) -> None:
    """PyInstaller wheels for the target platform (their bootloader is per-platform), installed into a
    plain directory the target Python puts on its path. PyPI has no armv7l wheel: there the x86_64 wheel's
    Python code is used with a bootloader built from PyInstaller's source distribution by Debian's cross gcc."""
    build_bootloader = arch.debian == "armhf"
    platform = "manylinux2014_x86_64" if build_bootloader else arch.pyinstaller_platform
    wheels = cache_dir() / "wheels" / arch.debian
    wheels.mkdir(parents=True, exist_ok=True)
    platform_args = ["--platform", platform, "--python-version", "3.11", "--only-binary=:all:"]
    _pip("download", *platform_args, "-d", str(wheels), PYINSTALLER_PIN)
    tmp = site.with_name(site.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _pip("install", *platform_args, "--no-index", "--find-links", str(wheels), "--target", str(tmp),
         PYINSTALLER_PIN)
    if build_bootloader:
        shutil.rmtree(tmp / "PyInstaller" / "bootloader" / "Linux-64bit-intel", ignore_errors=True)
        shutil.copytree(_cross_bootloader(arch), tmp / "PyInstaller" / "bootloader" / "Linux-32bit-arm")
    shutil.rmtree(site, ignore_errors=True)
    tmp.rename(site)


CROSS_GCC = {"armhf": "arm-linux-gnueabihf-gcc-12"}


def _cross_bootloader(arch: Arch) -> Path:
    """Build PyInstaller's bootloader for `arch` from its sdist with PyInstaller's own waf (cached)."""
    out = cache_dir() / "bootloader" / arch.debian / PYINSTALLER_PIN.split("==")[1]
    if (out / "run").is_file():
        return out
    gcc = find_tool(CROSS_GCC[arch.debian], "gcc-12-arm-linux-gnueabihf", SysrootError)
    src = cache_dir() / "bootloader" / "src"
    src.mkdir(parents=True, exist_ok=True)
    _pip("download", "--no-deps", "--no-binary", ":all:", "-d", str(src), PYINSTALLER_PIN)
    sdist = next(src.glob("pyinstaller-*.tar.gz"))
    work = Path(tempfile.mkdtemp(prefix="bootloader-", dir=src))
    try:
        run(["tar", "xzf", str(sdist), "-C", str(work)], error=SysrootError)
        tree = next(work.glob("pyinstaller-*"))
        env = {**os.environ, "CC": gcc, "STRIP": f"{arch.cross_prefix}strip"}
        what = f"building PyInstaller's bootloader for {arch.debian}"
        run([sys.executable, "./waf", "configure", "--static-zlib", "--no-tests", "all"], cwd=tree / "bootloader",
            env=env, error=SysrootError, what=what)
        built = tree / "PyInstaller" / "bootloader" / "Linux-32bit-arm"
        if not (built / "run").is_file():
            raise SysrootError(f"{what}: waf made no {built / 'run'}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(built, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def loader(s: PySysroot) -> Path:
    """The sysroot's own ld.so, from the interpreter its python names."""
    interp = read_elf(s.root / PYTHON).interp
    if interp is None:
        raise SysrootError(f"{s.root / PYTHON} names no program interpreter")
    return s.root / resolve_in_root(s.root, interp).lstrip("/")


def _write_tools(s: PySysroot) -> None:
    s.tools.mkdir(parents=True, exist_ok=True)
    libs = ":".join(str(s.root / d.lstrip("/")) for d in s.lib_dirs())
    runner = " ".join([*target_runner(s.arch, s.root), str(loader(s)), "--library-path", libs])
    scripts = {
        # The target python. PyInstaller re-runs sys.executable for helpers; bankboot's launcher sets
        # sys.executable to this script. --library-path makes ld.so ignore LD_LIBRARY_PATH, which stays
        # in the environment for PyInstaller's own library search.
        "python": f'export PYTHONHOME={s.root}/usr PYTHONPATH={s.site} PYTHONNOUSERSITE=1 '
                  f'PYTHONPYCACHEPREFIX={s.root.parent}/pycache\n'
                  f'exec {runner} {s.root / PYTHON} "$@"',
        # ldd cannot read another arch's binaries; the target's ld.so --list can.
        "ldd": f'unset LD_LIBRARY_PATH\n[ $# -gt 0 ] || {{ echo "usage: ldd FILE" >&2; exit 1; }}\n'
               f'exec {runner} --list "$@"',
    }
    for tool in ("objdump", "objcopy", "strip", "readelf"):
        binary = find_tool(f"{s.arch.cross_prefix}{tool}", f"binutils-{s.arch.cross_prefix}".rstrip("-"), SysrootError)
        scripts[tool] = f'unset LD_LIBRARY_PATH\nexec {binary} "$@"'
    for name, body in scripts.items():
        path = s.tools / name
        path.write_text(f"#!/bin/sh\n# Written by bankboot (builder/pysysroot.py).\n{body}\n")
        path.chmod(0o755)
