"""The lean libpython carries libm's functions itself, linked from libm.a (builder/leanpython.py,
STATIC_LIBM): it must need no libm.so.6, and Python's math must give the same bits as Debian's own python3.11
of the same sysroot (linked to libm.so.6, on amd64 its FMA builds where the CPU has them), errno-based
errors included. The lean library runs on the host (under qemu-user for ARM) through a four-line embedding
program, with the sysroot's ld.so, libc and standard library."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder.arch import ARCHES
from builder.leanpython import STATIC_LIBM

# Values over each function's domain, written as float.hex() so a difference in the last bit shows; the
# errors come from errno (ERANGE, EDOM) as libm sets it.
PROBE = """
import math
out = []
for name in ("acos", "asin", "atanh", "acosh", "asinh", "atan", "cbrt", "cos", "cosh", "erf", "erfc", "exp",
             "exp2", "expm1", "log", "log10", "log1p", "log2", "sin", "sinh", "sqrt", "tan", "tanh"):
    f = getattr(math, name)
    lo, hi = {"acos": (-1, 1), "asin": (-1, 1), "atanh": (-1, 1), "acosh": (1, 60), "log1p": (-1, 10)}.get(
        name, (1e-9, 40) if name.startswith(("log", "sqrt")) else (-20, 20))
    out += [f(lo + (hi - lo) * (i + 0.5) / 400).hex() for i in range(400)]
for i in range(1, 400):
    x, y = i * 0.37, (i % 41) - 20.5
    out += [(x ** y).hex(), math.atan2(y, x).hex(), math.hypot(x, y).hex(), math.fmod(x, y).hex(),
            repr(round(x * y, 3)), repr(math.frexp(x * y)), math.ldexp(x, int(y)).hex(), repr(math.modf(y)),
            math.nextafter(x, 0).hex(), repr(complex(x, y) ** 0.5)]
for bad in ("math.exp(1000)", "math.log(-1)", "math.sqrt(-1)", "10.0 ** 400", "math.ldexp(1.0, 5000)"):
    try:
        out.append(repr(eval(bad)))
    except (OverflowError, ValueError) as e:
        out.append(f"{type(e).__name__}: {e}")
print("\\n".join(out))
"""
EMBED = ("#include <Python.h>\n"
         "int main(int c, char **v) { Py_Initialize(); int r = PyRun_SimpleString(v[1]); Py_Finalize(); return r; }\n")


@pytest.mark.parametrize("name", STATIC_LIBM)
def test_lean_libpython_needs_no_libm_and_computes_the_same(name: str, tmp_path: Path) -> None:
    from builder.elf import read_elf
    from builder.launcher import COMPILERS
    from builder.leanpython import lean_libpython
    from builder.paths import cache_dir
    from builder.pysysroot import locate_sysroot
    from builder.run import target_runner

    arch = ARCHES[name]
    lib = lean_libpython(arch)
    assert "libm.so.6" not in read_elf(lib).needed
    sysroot = locate_sysroot(arch)
    # Compiled against libc6-dev's headers and start files (the library's link), linked to the Python
    # sysroot's libc (what the initramfs carries) through a libc.so of our own: libc6-dev's names absolute
    # paths, which Debian's cross linkers do not look up in a sysroot.
    dev = cache_dir() / "leanpython" / arch.debian / "dev"
    libc_dir = sysroot.root / "lib" / arch.triplet
    nonshared = dev / "usr/lib" / arch.triplet / "libc_nonshared.a"
    (tmp_path / "libc.so").write_text(f"GROUP ( {libc_dir / 'libc.so.6'} {nonshared}"
                                      f" AS_NEEDED ( {sysroot.root / arch.device.ld_so.lstrip('/')} ) )\n")
    (tmp_path / "embed.c").write_text(EMBED)
    gcc, _, flags = COMPILERS[arch.debian]
    libdirs = ":".join(str(sysroot.root / d.lstrip("/")) for d in sysroot.lib_dirs())
    subprocess.run([gcc, f"--sysroot={dev}", "-O1", *flags, "-I", str(dev / "usr/include/python3.11"),
                    "-L", str(tmp_path), f"-Wl,-rpath-link,{libdirs}", "-o", str(tmp_path / "embed"),
                    str(tmp_path / "embed.c"), str(lib)], check=True)
    ld_so = str(sysroot.root / arch.device.ld_so.lstrip("/"))
    lean = subprocess.run([*target_runner(arch, sysroot.root), ld_so, "--library-path", f"{lib.parent}:{libdirs}",
                           str(tmp_path / "embed"), PROBE], env={"PYTHONHOME": str(sysroot.root / "usr")},
                          capture_output=True, text=True, check=True).stdout
    # On amd64 Debian's libm picks FMA/AVX2 builds where the CPU has them, which round a few results
    # differently in the last bit; the lean library has the SSE2 builds only (leanpython.X86_FEATURES).
    # Debian's, told to ignore those CPU features, must give the same bits.
    tunables = {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-FMA4,-AVX,-AVX512F"} if name == "amd64" else {}
    debian = subprocess.run([str(sysroot.python), "-c", PROBE], capture_output=True, text=True, check=True,
                            env={**os.environ, **tunables}).stdout
    assert lean.count("\n") > 13000
    assert lean == debian
