"""On amd64 the lean libpython carries libm's functions itself, linked from libm.a (builder/leanpython.py,
STATIC_LIBM): it must need no libm.so.6, and Python's math must give the same bits as the build host's own
Python (Debian's python3.11 on the same glibc, linked to libm.so.6 and its FMA builds where the CPU has
them), errno-based errors included. The lean library is run on the host through a four-line embedding
program, with the sysroot's standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from builder.arch import ARCHES, host_arch

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


@pytest.mark.skipif(host_arch().debian != "amd64", reason="runs the amd64 library on the host")
def test_amd64_libpython_needs_no_libm_and_computes_the_same(tmp_path: Path) -> None:
    from builder.elf import read_elf
    from builder.leanpython import lean_libpython
    from builder.paths import cache_dir
    from builder.pysysroot import locate_sysroot

    arch = ARCHES["amd64"]
    lib = lean_libpython(arch)
    assert "libm.so.6" not in read_elf(lib).needed
    dev = cache_dir() / "leanpython" / arch.debian / "dev"  # the headers the library was linked beside
    (tmp_path / "embed.c").write_text(EMBED)
    subprocess.run(["gcc", "-O1", "-I", str(dev / "usr/include/python3.11"),
                    "-I", str(dev / f"usr/include/{arch.triplet}/python3.11"), "-o", str(tmp_path / "embed"),
                    str(tmp_path / "embed.c"), str(lib)], check=True)
    home = locate_sysroot(arch).root / "usr"
    lean = subprocess.run([str(tmp_path / "embed"), PROBE], env={"PYTHONHOME": str(home)},
                          capture_output=True, text=True, check=True).stdout
    host = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert lean.count("\n") > 13000
    assert lean == host
