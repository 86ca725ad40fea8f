"""The libxenctrl kexec-tools gets in the initramfs: xenctrl_shim.c beside this file, a few kilobytes that
answer "no Xen here", instead of Xen's libxenctrl and the six Xen libraries it needs (0.6 MB the kernel
unpacks at every boot for code that only runs in a Xen dom0). Compiled by Debian's gcc for the target, with
the symbols and the symbol version the real library gives, and cached by everything that goes in. A
kexec-tools that needs a symbol the shim lacks is refused at build time, naming it."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from builder.arch import Arch
from builder.cachelock import cache_lock
from builder.elf import read_elf
from builder.errors import BuildError
from builder.launcher import COMPILERS
from builder.paths import cache_dir
from builder.run import find_tool, run

SOURCE = Path(__file__).with_name("xenctrl_shim.c")
# Small on purpose: no unwind tables or build id, 4 KiB alignment without RELRO padding (the real one is
# 64 KiB of mostly zeros on arm64).
FLAGS = ["-Os", "-std=gnu11", "-Wall", "-Werror", "-shared", "-fPIC", "-nostdlib", "-ffreestanding", "-fno-builtin",
         "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-Wl,--build-id=none",
         "-Wl,-z,noexecstack", "-Wl,-z,noseparate-code", "-Wl,-z,norelro", "-Wl,--hash-style=gnu", "-s"]


class XenShimError(BuildError):
    pass


def build_xen_shim(arch: Arch, kexec: Path) -> Path | None:
    """The shim for `arch` under the name and symbol version `kexec` (Debian's /sbin/kexec) was linked
    against, checked to define every libxenctrl symbol it needs; None for a kexec without Xen support."""
    soname = next((n for n in read_elf(kexec).needed if n.startswith("libxenctrl.so")), None)
    if soname is None:
        return None
    if arch.debian not in COMPILERS:
        raise XenShimError(f"no compiler known for {arch.debian}")
    nm = find_tool(f"{arch.cross_prefix}nm", f"binutils-{arch.cross_prefix}".rstrip("-"), XenShimError)
    wanted = [s for s in _dynamic(nm, kexec, "--undefined-only") if s.startswith("xc_")]
    versions = sorted({s.split("@", 1)[1].lstrip("@") for s in wanted if "@" in s})
    if len(versions) != 1:
        raise XenShimError(f"{kexec} takes libxenctrl symbols of versions {versions or 'none'}, not one")
    gcc_name, package, own_flags = COMPILERS[arch.debian]
    gcc = find_tool(gcc_name, package, XenShimError)
    version = run([gcc, "-dumpfullversion"], error=XenShimError).stdout.strip()
    key = hashlib.sha256(repr((SOURCE.read_bytes(), gcc_name, version, FLAGS, own_flags, soname, versions)).encode())
    out = cache_dir() / "xenshim" / arch.debian / key.hexdigest()[:16] / soname
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with cache_lock(out), tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            if not out.is_file():
                script = Path(tmp) / "version.map"
                script.write_text(f"{versions[0]} {{ global: xc_*; local: *; }};\n")
                built = Path(tmp) / soname
                run([gcc, *FLAGS, *own_flags, f"-Wl,--version-script={script}", f"-Wl,-soname,{soname}", "-o",
                     str(built), str(SOURCE)], error=XenShimError, what=f"compiling the Xen shim for {arch.debian}")
                if read_elf(built).machine != arch.elf_machine:
                    raise XenShimError(f"{gcc_name} made a shim that is not {arch.elf_machine}")
                built.rename(out)
    # Every xc_ symbol kexec needs must be one the shim defines: a newer kexec-tools calling another would
    # otherwise fail to start on the device, and only when an image's own kernel is booted.
    have = set(_dynamic(nm, out, "--defined-only"))
    missing = sorted(s for s in wanted if s.replace("@@", "@") not in {h.replace("@@", "@") for h in have})
    if missing:
        raise XenShimError(f"{kexec} needs {', '.join(missing)} from {soname}, which {SOURCE.name} does not define")
    return out


def _dynamic(nm: str, path: Path, flag: str) -> list[str]:
    text = run([nm, "-D", flag, str(path)], error=XenShimError).stdout
    return [line.split()[-1] for line in text.splitlines() if line.split()]
