"""Freeze initfs into a PyInstaller onedir bundle for a target architecture, cached by a hash of
everything that goes in, so an unchanged rebuild does not re-freeze (a freeze under qemu-user takes
about half a minute; a cache hit takes none).

Onedir, not onefile: onefile keeps its bootloader as PID 1 and runs Python as a child, which cannot
switch_root, and it unpacks itself into a writable TMPDIR on every start."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from builder.cachelock import cache_lock
from builder.errors import BuildError
from builder.paths import cache_dir, package_root
from builder.pysysroot import PySysroot
from builder.run import run

ENTRY = "initfs/entry.py"  # relative to the package root (a checkout, or an installed wheel's site-packages)
FROZEN_PACKAGES = ("initfs", "overlay_layout")
NAME = "init"
CONTENTS_DIR = "bankboot"  # the bundle's libraries and Python modules, at /bankboot in the initramfs

# Standard-library parts the init never uses: keeping them out keeps the initramfs small and the
# start-up short on slow boards.
EXCLUDES = [
    "tkinter", "unittest", "pydoc", "doctest", "email", "http", "xml", "xmlrpc", "sqlite3",
    # ssl (with OpenSSL) is the TLS piece beside the initramfs, which only `bankctl stage https://` opens.
    "ssl", "_ssl", "_hashlib", "lib2to3", "distutils", "setuptools", "pkg_resources", "asyncio",
    "multiprocessing", "concurrent", "curses", "readline", "pdb", "bz2", "lzma", "_bz2", "_lzma",
    "decimal", "_decimal", "ftplib", "smtplib", "mailbox",
    # Signatures go to libsodium through the lean libpython's `_bankboot` (overlay_layout/ed25519.py): no PyNaCl
    # or cffi at boot. And no ctypes (nor _ctypes, libffi): PyInstaller's bootstrap imports it at every start
    # of a bundle that has it (12 million instructions); `_bankboot` makes the calls we made through it, and
    # hostnative.py is its ctypes stand-in for a build host, never the device's.
    "nacl", "cffi", "_cffi_backend", "ctypes", "_ctypes", "overlay_layout.hostnative",
    # East Asian codecs (1.1 MB of extension modules) and expat: no text the init reads needs them.
    "_codecs_jp", "_codecs_kr", "_codecs_cn", "_codecs_tw", "_codecs_hk", "_codecs_iso2022", "_multibytecodec",
    "pyexpat",
    # Never imported by the init or bankctl, but their presence makes PyInstaller run its inspect hook at
    # every start (inspect, ast, dis, tokenize, zipfile, pathlib, urllib: 0.45 s of a 1.15 s start-up on
    # qemu-aarch64 under TCG, measured with -X importtime).
    "inspect", "zipfile", "pathlib", "urllib", "ipaddress", "importlib.metadata", "logging",
    # Collected through modules the init never runs (PyInstaller follows every import statement).
    "ast", "dataclasses", "datetime", "calendar", "_strptime", "pickle", "_compat_pickle", "subprocess",
    "threading", "_threading_local", "gzip", "pprint", "tracemalloc", "stringprep", "quopri",
    "getopt", "_py_abc", "resource",
    # Only ever imported for the type checker (under `if TYPE_CHECKING:`), which PyInstaller cannot tell:
    # 0.2 MB the device never runs. tarfile: shutil's archive helpers, never called (bank files have their
    # own reader, overlay_layout/bankfile.py).
    "typing", "_typing", "overlay_layout.records", "tarfile",
]
# Codecs anything here uses (Python's own UTF-8 mode, ASCII, Latin-1 and the escapes); the other ~110
# modules of `encodings` are 0.6 MB of base_library.zip that nothing in the init or bankctl reads.
KEEP_ENCODINGS = ("__init__", "aliases", "ascii", "latin_1", "utf_8", "utf_8_sig", "unicode_escape",
                  "raw_unicode_escape")
# PyInstaller zlib-compresses each module in its archives (the PYZ in /init, base_library.zip). Stored, the
# initramfs's zstd would compress them a little better (0.2 MB on arm64), but the kernel then decompresses
# all 1.9 MB before /init runs (25 ms on the instruction clock), where Python inflates only the modules a
# run imports (the init's: a quarter of them, 2 ms). Compressed, the kernel copies them.
FREEZE_ENV = {"PYINSTALLER_ZLIB_COMPRESSION_LEVEL": "9"}
# -OO: no docstrings or asserts in the bundle's bytecode (nothing here reads a docstring at run time).
OPTIONS = ["--optimize", "2"]
# Modules the TLS piece's ssl.py (overlay_layout/net/tlspiece.py runs it from source) imports, which PyInstaller
# never sees, and which neither the piece (tlspiece.MODULES) nor anything the init imports carries: without
# base64 `bankctl stage URL` died in the guest with "No module named 'base64'"; base64 now travels in the
# piece (tests/host/test_lean_imports.py reads ssl.py for what it needs).
HIDDEN_IMPORTS: list[str] = []
# Shared libraries loaded with dlopen (`_bankboot`), which PyInstaller cannot see: (path in the sysroot, bundle dir).
BINARIES = [("usr/lib/{triplet}/libsodium.so.23", ".")]


def excluded_encodings(sysroot: PySysroot) -> list[str]:
    """`encodings.X` for every codec module of the target's stdlib not in KEEP_ENCODINGS."""
    found = (sysroot.root / "usr/lib").glob("python3.*/encodings/*.py")
    return sorted(f"encodings.{f.stem}" for f in found if f.stem not in KEEP_ENCODINGS)


def freeze_inputs() -> list[Path]:
    """The files whose content decides the frozen result, found from the installed packages (a checkout's
    and a wheel's give the same hash for the same sources, so they share frozen inits in one cache)."""
    root = package_root()
    return sorted([*(f for pkg in FROZEN_PACKAGES for f in (root / pkg).rglob("*.py")), Path(__file__)])


def input_hash(sysroot: PySysroot, libpython: Path) -> str:
    h = hashlib.sha256()
    h.update(sysroot.stamp.encode())
    h.update(libpython.read_bytes())
    h.update(repr((EXCLUDES, KEEP_ENCODINGS, OPTIONS, HIDDEN_IMPORTS, BINARIES, FREEZE_ENV)).encode())
    for f in freeze_inputs():
        h.update(str(f.relative_to(package_root())).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def stage_sources(dest: Path) -> Path:
    """Copy the frozen packages' sources into `dest`: PyInstaller then searches only them (and the target's
    own stdlib), never the host's site-packages next to an installed bankboot."""
    for pkg in FROZEN_PACKAGES:
        root = package_root() / pkg
        for f in sorted(root.rglob("*.py")):  # subpackages too (overlay_layout/net)
            (dest / pkg / f.parent.relative_to(root)).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest / pkg / f.relative_to(root))
    return dest


class FreezeError(BuildError):
    pass


def use_lean_libpython(contents: Path, libpython: Path, soname: str) -> None:
    """The bundle's libpython replaced by builder/leanpython.py's; a library only the old one needed (libexpat,
    for the XML parser left out) goes with it."""
    from builder.elf import is_elf, read_elf

    shutil.copyfile(libpython, contents / soname)
    needed = {n for p in contents.rglob("*") if p.is_file() and not p.is_symlink() and is_elf(p)
              for n in read_elf(p).needed}
    for lib in contents.glob("libexpat.so*"):
        if lib.name not in needed:
            lib.unlink()


def freeze_init(sysroot: PySysroot, log: Path | None = None) -> Path:
    """Return the onedir bundle (a directory holding `init` and `bankboot/`), freezing when needed."""
    from builder.leanpython import lean_libpython

    libpython = lean_libpython(sysroot.arch)
    key = input_hash(sysroot, libpython)
    out = cache_dir() / "frozen" / sysroot.arch.debian / key
    if (out / NAME / NAME).is_file():
        return out / NAME
    with cache_lock(out):
        if not (out / NAME / NAME).is_file():  # or another process froze it while this one waited
            _freeze(sysroot, libpython, out, log)
    return out / NAME


def _freeze(sysroot: PySysroot, libpython: Path, out: Path, log: Path | None) -> None:
    from builder.leanpython import SONAME

    key = out.name
    work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=out.parent))
    sources = stage_sources(work / "src")
    launcher = work / "run_pyinstaller.py"
    # PyInstaller starts helper processes with sys.executable (and compat uses _base_executable):
    # both must be the host-executable wrapper, not the target binary.
    launcher.write_text(
        "import sys\n"
        f"sys.executable = sys._base_executable = {str(sysroot.python)!r}\n"
        "from PyInstaller.__main__ import run\n"
        "run()\n"
    )
    args = [
        str(sysroot.python), str(launcher), "--noconfirm", "--onedir", "--name", NAME,
        "--contents-directory", CONTENTS_DIR, "--strip", "--log-level", "WARN",
        "--distpath", str(work / "dist"), "--workpath", str(work / "build"), "--specpath", str(work),
        "--paths", str(sources), *OPTIONS,
        *[f"--exclude-module={m}" for m in [*EXCLUDES, *excluded_encodings(sysroot)]],
        *[f"--hidden-import={m}" for m in HIDDEN_IMPORTS],
        *[f"--add-binary={sysroot.root / src.format(triplet=sysroot.arch.triplet)}:{dest}" for src, dest in BINARIES],
        str(sources / ENTRY),
    ]
    proc = run(args, env={**sysroot.env(), **FREEZE_ENV}, cwd=work, check=False)
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not (work / "dist" / NAME / NAME).is_file():
        tail = (proc.stdout + proc.stderr).strip()[-3000:]
        shutil.rmtree(work, ignore_errors=True)
        raise FreezeError(f"PyInstaller failed for {sysroot.arch.debian} (exit {proc.returncode}):\n{tail}")
    use_lean_libpython(work / "dist" / NAME / CONTENTS_DIR, libpython, SONAME)
    final = work / "final"
    (work / "dist").rename(final)
    if out.exists():
        shutil.rmtree(out)
    final.rename(out)
    shutil.rmtree(work, ignore_errors=True)
