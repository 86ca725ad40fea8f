"""A smaller libpython for the initramfs: Debian's own, linked again from the PIC archive Debian ships
(libpython3.11-dev) without the builtin modules the init and bankctl never import. Debian builds some 60
modules into libpython; `unicodedata` alone is 1.1 MB, and with the XML parsers (and the libexpat they
pull in), the date, pickle and CSV modules and the hashes we do not use, a quarter of the library
is code the device unpacks at every boot (the kernel decompresses the whole initramfs before /init runs)
and carries for nothing. The objects are Debian's, compiled as Debian compiles them; ours are the table of
builtin modules (_PyImport_Inittab, written here in assembler), the link, and one builtin module of our own,
`_bankboot` (bankbootmodule.c beside this file, compiled by Debian's gcc for the target against the target's
Python and libc headers): the system and libsodium calls the init and bankctl would otherwise make through
ctypes, which is then left out of the freeze (builder/freeze.py). Every undefined symbol of the result must
be defined by a library it names, or the build fails: a missing one would otherwise surface as a crash on
the device."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from pathlib import Path

from builder import debian
from builder.arch import Arch
from builder.cachelock import cache_lock
from builder.errors import BuildError
from builder.launcher import COMPILERS
from builder.paths import cache_dir
from builder.run import find_tool, run

SONAME = "libpython3.11.so.1.0"
# LLVM's linker, for one thing Debian 12's GNU ld cannot do on ARM: pack the relative relocations (DT_RELR,
# which glibc 2.36 reads). libpython's 37,000 of them are 0.9 MB of .rela.dyn as RELA entries, 24 bytes each,
# that every boot unpacks from the initramfs (13 ms on the instruction clock) and ld.so walks; packed, they
# are a few kilobytes of bitmap.
LLD = "ld.lld-16"
# Unwind tables are dropped too (0.44 MB on arm64): nothing unwinds through libpython here. The init and
# bankctl start no thread (threading is left out of the freeze, and nothing calls _thread), so no thread
# exits through pthread_exit's forced unwind, and the library holds no C++. What is lost is a debugger's
# backtrace through libpython on the device. INSERT keeps the linker's own layout for everything else.
NO_UNWIND = "SECTIONS { /DISCARD/ : { *(.eh_frame) *(.eh_frame_hdr) } } INSERT AFTER .text;\n"
# The PIC archive and config.c; libgcc.a for the link; the target's libc and kernel headers for _bankboot.
DEV_PACKAGES = ["libpython3.11-dev", "libgcc-12-dev", "libc6-dev", "linux-libc-dev"]
MODULE_SOURCE = Path(__file__).with_name("bankbootmodule.c")
MODULE = ("_bankboot", "PyInit__bankboot")
# As CPython compiles its builtin modules (position-independent, optimised), warnings as errors; no unwind
# tables (the link discards them anyway).
MODULE_FLAGS = ["-O2", "-fPIC", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-fno-semantic-interposition",
                "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-g0"]
# Builtin modules left out, with the objects of the PIC archive that hold only them. Each import of one
# of these raises ImportError; pure-Python stdlib modules that wrap them (datetime, pickle) fall back to
# their Python code. The hashes stay: hashlib's import builds every guaranteed algorithm and, for one
# that is missing, logs through `logging`, which the freeze leaves out. `array` stays: socket.py imports it
# (for send_fds) where the platform has sendmsg, so without it `bankctl stage URL` and `poll` cannot start.
DROPPED = {
    "unicodedata": ("unicodedata.o",),
    "pyexpat": ("pyexpat.o",),
    "_elementtree": ("_elementtree.o",),
    "_datetime": ("_datetimemodule.o",),
    "_pickle": ("_pickle.o",),
    "_csv": ("_csv.o",),
    "cmath": ("cmathmodule.o",),
    "_statistics": ("_statisticsmodule.o",),
    "spwd": ("spwdmodule.o",),
    "syslog": ("syslogmodule.o",),
    "xxsubtype": ("xxsubtype.o",),
    "_symtable": ("symtablemodule.o",),
    "_tokenize": ("Python-tokenize.o",),
    "_opcode": ("_opcode.o",),
}
# Objects of the archive that are not part of the library (the python program's main).
NOT_LIBRARY = ("python.o", "config.o")
# Where libm's functions come from. libpython calls 36 of them (math, float and complex objects), and only
# libpython links libm; Debian's libm.so.6 holds all of libm (long-double, _Float128 and float variants; on
# amd64 each exp/log/pow/sin... also in FMA, FMA4 and AVX2 builds): 0.36 MB zstd on amd64, 0.26 MB on arm64.
# Here the objects of Debian's libm.a that define the 36 (and what they use) are linked into libpython
# instead (0.07-0.09 MB zstd), and the initramfs carries no libm.so.6. The archive's objects are built for a
# static program: what they expect of one is given by a small object assembled here (support_assembly),
# nothing of libm is compiled again. errno is libc's exported TLS `errno` (GLIBC_PRIVATE: the libc the
# initramfs carries beside it, from the same sysroot).
STATIC_LIBM = ("amd64", "arm64", "armhf")
# libm's internal names for frexp and ldexp, which live in libc and are exported there by their public names
# only: each becomes a jump to the public one. Per architecture: the jump, the assembler's symbol type word.
LIBM_ALIASES = ("frexp", "ldexp")
JUMPS = {"amd64": ("jmp {0}@PLT", "@function"), "arm64": ("b {0}", "%function"), "armhf": ("b {0}", "%function")}
# On amd64 the archive's IFUNC resolvers read `_dl_x86_cpu_features`, the CPU feature table of a static
# program (a shared libm reads ld.so's, which ld.so does not export under that name), to pick an FMA or AVX2
# build of exp, log, pow, sin... Ours is all zero and hidden, so every resolver picks the SSE2 build, which
# any x86_64 CPU runs: the results of Debian's libm on a CPU without FMA/AVX2, the same on every CPU (Debian's
# own differ in the last bit for a few inputs between CPUs with and without FMA; both are within glibc's
# error bounds), a few nanoseconds slower per call on an FMA CPU; no boot step calls them.
# tests/host/test_lean_libm.py compares every architecture's results bit for bit with Debian's python3.11.
X86_FEATURES = """\t.section .bss
\t.globl _dl_x86_cpu_features
\t.hidden _dl_x86_cpu_features
\t.type _dl_x86_cpu_features, @object
\t.balign 64
_dl_x86_cpu_features:
\t.zero 1024
\t.size _dl_x86_cpu_features, 1024
"""


def support_assembly(arch: Arch) -> str:
    """What libm.a's objects need of a static program, for a shared libpython (see STATIC_LIBM)."""
    jump, kind = JUMPS[arch.debian]
    lines = [X86_FEATURES] if arch.debian == "amd64" else []
    lines.append("\t.arm\n" if arch.debian == "armhf" else "")
    lines.append("\t.text\n")
    for name in LIBM_ALIASES:
        lines.append(f"\t.globl __{name}\n\t.hidden __{name}\n\t.type __{name}, {kind}\n\t.balign 4\n"
                     f"__{name}:\n\t{jump.format(name)}\n\t.size __{name}, .-__{name}\n")
    lines.append('\t.section .note.GNU-stack,"",%progbits\n')
    return "".join(lines)


class LeanPythonError(BuildError):
    pass


def _pointer(arch: Arch) -> tuple[str, int]:
    return (".quad", 8) if arch.elf_class == 64 else (".word", 4)


def inittab_assembly(modules: list[tuple[str, str]], arch: Arch) -> str:
    """_PyImport_Inittab as config.c would define it: {name, init function or NULL} pairs and a sentinel."""
    word, size = _pointer(arch)
    lines = ['\t.section .data.rel.ro,"aw"', "\t.globl _PyImport_Inittab", "\t.type _PyImport_Inittab, %object",
             f"\t.balign {size}", "_PyImport_Inittab:"]
    for i, (_, init) in enumerate(modules):
        lines.append(f"\t{word} .Lname{i}, {init if init != 'NULL' else 0}")
    lines += [f"\t{word} 0, 0", f"\t.size _PyImport_Inittab, {2 * size * (len(modules) + 1)}",
              '\t.section .rodata.str1.1,"aMS",%progbits,1']
    lines += [f'.Lname{i}: .string "{name}"' for i, (name, _) in enumerate(modules)]
    lines.append('\t.section .note.GNU-stack,"",%progbits')
    return "\n".join(lines) + "\n"


def read_inittab(config_c: Path) -> list[tuple[str, str]]:
    """The (module, init function) pairs of Debian's config.c, in its order."""
    found = re.findall(r'\{"([A-Za-z0-9_.]+)",\s*([A-Za-z0-9_]+)\}', config_c.read_text())
    if not found:
        raise LeanPythonError(f"{config_c}: no _PyImport_Inittab entries found")
    return found


def lean_libpython(arch: Arch) -> Path:
    """The relinked, stripped libpython3.11.so.1.0 for `arch` (cached by what went into it)."""
    versions = debian.package_versions(DEV_PACKAGES, arch.debian)
    linker = run([find_tool(LLD, LLD.removeprefix("ld."), LeanPythonError), "--version"],
                 error=LeanPythonError).stdout.strip()
    gcc = _compiler(arch)
    compiler = run([gcc, "-dumpfullversion"], error=LeanPythonError).stdout.strip()
    key = hashlib.sha256(repr((sorted(versions.items()), sorted(DROPPED.items()), NOT_LIBRARY, linker, compiler,
                               MODULE_FLAGS, MODULE_SOURCE.read_bytes(),
                               Path(__file__).read_bytes())).encode()).hexdigest()[:16]
    out = cache_dir() / "leanpython" / arch.debian / key / SONAME
    if out.is_file():
        return out
    with cache_lock(out):
        if not out.is_file():  # or another process linked it while this one waited
            _link(arch, key, versions, out)
    return out


def _compiler(arch: Arch) -> str:
    if arch.debian not in COMPILERS:
        raise LeanPythonError(f"no compiler known for {arch.debian}")
    name, package, _ = COMPILERS[arch.debian]
    return find_tool(name, package, LeanPythonError)


def compile_module(arch: Arch, dev: Path, out: Path) -> None:
    """bankbootmodule.c compiled for `arch` into the object `out`, against the headers unpacked in `dev`
    (Debian's libpython3.11-dev, libc6-dev and linux-libc-dev for that architecture) as the sysroot."""
    _, _, own_flags = COMPILERS[arch.debian]
    run([_compiler(arch), f"--sysroot={dev}", *MODULE_FLAGS, *own_flags, "-I", str(dev / "usr/include/python3.11"),
         "-c", "-o", str(out), str(MODULE_SOURCE)], error=LeanPythonError,
        what=f"compiling {MODULE_SOURCE.name} for {arch.debian}")


def _link(arch: Arch, key: str, versions: dict[str, str], out: Path) -> None:
    debs = debian.download(DEV_PACKAGES, arch.debian, cache_dir() / "debs" / arch.debian)
    dev = debian.unpack(debs, cache_dir() / "leanpython" / arch.debian / "dev",
                        "".join(f"{n} {versions[n]}\n" for n in DEV_PACKAGES))
    config = dev / f"usr/lib/python3.11/config-3.11-{arch.triplet}"
    archive, libgcc = config / "libpython3.11-pic.a", next(iter(sorted(dev.glob("usr/lib/gcc/*/12/libgcc.a"))), None)
    if not archive.is_file() or libgcc is None:
        raise LeanPythonError(f"libpython3.11-dev or libgcc-12-dev for {arch.debian} lacks "
                              f"{archive if not archive.is_file() else 'libgcc.a'}")
    from builder.pysysroot import locate_sysroot

    sysroot = locate_sysroot(arch).root
    prefix = arch.cross_prefix
    tool = {t: find_tool(f"{prefix}{t}", f"binutils-{prefix}".rstrip("-"), LeanPythonError)
            for t in ("ar", "as", "strip", "nm")}
    tool["ld"] = find_tool(LLD, LLD.removeprefix("ld."), LeanPythonError)
    work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=out.parent.parent))
    try:
        objs = work / "objs"
        objs.mkdir()
        run([tool["ar"], "x", str(archive)], cwd=objs, error=LeanPythonError, what="ar x libpython3.11-pic.a")
        drop = {o for files in DROPPED.values() for o in files} | set(NOT_LIBRARY)
        missing = sorted(o for files in DROPPED.values() for o in files if not (objs / o).is_file())
        if missing:
            raise LeanPythonError(f"{archive} has no {', '.join(missing)}: the drop list is for another Python")
        for o in drop:
            (objs / o).unlink(missing_ok=True)
        keep = [m for m in read_inittab(config / "config.c") if m[0] not in DROPPED]
        if any(name == MODULE[0] for name, _ in keep):
            raise LeanPythonError(f"{config / 'config.c'} already has a builtin module named {MODULE[0]}")
        compile_module(arch, dev, objs / "bankbootmodule.o")
        (work / "inittab.s").write_text(inittab_assembly([*keep, MODULE], arch))
        run([tool["as"], "-o", str(work / "inittab.o"), str(work / "inittab.s")], error=LeanPythonError)
        (work / "no-unwind.ld").write_text(NO_UNWIND)
        static_libm = _static_libm(arch, dev, work, tool["as"])
        libs = [sysroot / f"lib/{arch.triplet}/{n}"
                for n in (*(() if static_libm else ("libm.so.6",)), "libz.so.1", "libc.so.6")]
        ld_so = sysroot / arch.device.ld_so.lstrip("/")
        linked = work / SONAME
        run([tool["ld"], "-shared", "-O1", "-Bsymbolic", "-z", "relro", "-z", "noexecstack",
             "-z", "pack-relative-relocs", "--hash-style=gnu", "--build-id=sha1", "-T", str(work / "no-unwind.ld"),
             "-soname", SONAME, "-o", str(linked),
             *sorted(str(o) for o in objs.glob("*.o")), str(work / "inittab.o"), *static_libm, *map(str, libs),
             str(ld_so), str(libgcc)], error=LeanPythonError, what=f"linking {SONAME} for {arch.debian}")
        run([tool["strip"], "--strip-unneeded", str(linked)], error=LeanPythonError)
        check_resolved(linked, [*libs, ld_so], tool["nm"])
        out.parent.mkdir(parents=True, exist_ok=True)
        linked.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _static_libm(arch: Arch, dev: Path, work: Path, assembler: str) -> list[str]:
    """The link's arguments for libm from libm.a (STATIC_LIBM), or none where libpython links libm.so.6: the
    support object first, then the archive (the linker takes only the members that define what is used)."""
    if arch.debian not in STATIC_LIBM:
        return []
    # On amd64 libm.a is a linker script naming libm-2.36.a (and libmvec.a); elsewhere it is the archive.
    archives = sorted(dev.glob(f"usr/lib/{arch.triplet}/libm-2.*.a")) or [dev / f"usr/lib/{arch.triplet}/libm.a"]
    if len(archives) != 1 or not _is_archive(archives[0]):
        raise LeanPythonError(f"libc6-dev for {arch.debian} has no libm archive (found {archives})")
    (work / "libm-support.s").write_text(support_assembly(arch))
    run([assembler, "-o", str(work / "libm-support.o"), str(work / "libm-support.s")], error=LeanPythonError)
    return [str(work / "libm-support.o"), str(archives[0])]


def _is_archive(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(8) == b"!<arch>\n"


def _symbols(nm: str, path: Path, defined: bool) -> set[str]:
    flag = "--defined-only" if defined else "--undefined-only"
    text = run([nm, "-D", flag, str(path)], error=LeanPythonError).stdout
    return {line.split()[-1].split("@")[0] for line in text.splitlines() if line.split()}


def check_resolved(lib: Path, needed: list[Path], nm: str) -> None:
    """Every symbol `lib` leaves undefined is defined by one of `needed` (weak ones excepted)."""
    text = run([nm, "-D", "--undefined-only", str(lib)], error=LeanPythonError).stdout
    undefined = {line.split()[-1].split("@")[0] for line in text.splitlines()
                 if line.split() and line.split()[0] == "U"}
    have = set().union(*(_symbols(nm, n, defined=True) for n in needed))
    missing = sorted(undefined - have)
    if missing:
        raise LeanPythonError(f"{lib.name} would need {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}, "
                              f"which no library it links provides: an object the drop list removed is still used")
