"""bankctl's launcher (bankctl_launcher.c beside this file) for one architecture: a freestanding program of
a few hundred bytes that execs the kit's ld.so on the kit's frozen program, compiled by Debian's gcc for
that architecture and cached by everything that goes in (the compiler's output is byte-reproducible)."""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

from builder.arch import Arch
from builder.cachelock import cache_lock
from builder.elf import read_elf
from builder.errors import BuildError
from builder.paths import cache_dir
from builder.run import find_tool, run
from overlay_layout.contract import KIT

SOURCE = Path(__file__).with_name("bankctl_launcher.c")
# (compiler, Debian package, its own flags) per Debian architecture.
COMPILERS = {"amd64": ("x86_64-linux-gnu-gcc-12", "gcc-12", []),
             "arm64": ("aarch64-linux-gnu-gcc-12", "gcc-12-aarch64-linux-gnu", []),
             "armhf": ("arm-linux-gnueabihf-gcc-12", "gcc-12-arm-linux-gnueabihf", ["-marm"])}
# No libc, no start files, nothing the compiler would call behind our back (memcpy for a loop, stack
# protector), no build id or unwind tables (reproducible and small), symbols stripped.
FLAGS = ["-Os", "-std=gnu11", "-Wall", "-Werror", "-ffreestanding", "-fno-builtin", "-fno-stack-protector",
         "-fno-tree-loop-distribute-patterns", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
         "-fno-pie", "-no-pie", "-static", "-nostdlib", "-Wl,-e,_start", "-Wl,--build-id=none",
         "-Wl,-z,noexecstack", "-s"]
_PATH_RE = re.compile(r"^[A-Za-z0-9_./+:-]+$")


class LauncherError(BuildError):
    pass


def build_launcher(arch: Arch, interp: str, libdirs: tuple[str, ...], kit: str = KIT) -> bytes:
    """The launcher for `arch` that runs `kit`+`interp` on `kit`/init with LD_LIBRARY_PATH the kit's
    `libdirs` (paths inside the initramfs, as initramfs.conf records them)."""
    if arch.debian not in COMPILERS:
        raise LauncherError(f"no compiler known for {arch.debian}")
    libpath = ":".join(f"{kit}{d}" for d in libdirs)
    for value in (kit, interp, libpath):
        if not _PATH_RE.match(value):
            raise LauncherError(f"bankctl's launcher: {value!r} is not a plain path")
    gcc_name, package, own_flags = COMPILERS[arch.debian]
    gcc = find_tool(gcc_name, package, LauncherError)
    defines = [f'-DKIT="{kit}"', f'-DLDSO="{interp}"', f'-DLIBPATH="{libpath}"']
    version = run([gcc, "-dumpfullversion"], error=LauncherError).stdout.strip()
    key = hashlib.sha256(repr((SOURCE.read_bytes(), gcc_name, version, FLAGS, own_flags, defines)).encode())
    out = cache_dir() / "launcher" / arch.debian / key.hexdigest()[:16] / "bankctl"
    if out.is_file():
        return out.read_bytes()
    with cache_lock(out), tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = Path(tmp) / "bankctl"
        run([gcc, *FLAGS, *own_flags, *defines, "-o", str(built), str(SOURCE)], error=LauncherError,
            what=f"compiling bankctl's launcher for {arch.debian}")
        info = read_elf(built)
        if info.machine != arch.elf_machine or info.interp or info.needed:
            raise LauncherError(f"{gcc_name} made a launcher that is not a static {arch.elf_machine} program")
        built.rename(out)
    return out.read_bytes()
