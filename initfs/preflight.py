"""Preflight: before the hand-over, prove that every byte the kernel will need to start the image's init
reads back: the init itself (symlinks resolved inside the image), its ELF interpreter and the shared
libraries it names (DT_NEEDED, recursively), or a script's interpreter. They are read through dm-verity,
so a damaged block is an I/O error here, where the init can still try another image, and not in the
image's init after the switch, where nothing could.

Two ways. An image built by `bankboot image` carries, in its signed manifest, the byte ranges of the
squashfs that hold those files (`preflight`: their compressed blocks, found at build time by init_files()
below and builder/squashfs.py): the init reads those ranges from the verity device, which proves every
block without decompressing anything (verify_ranges). Otherwise (an older image, or `init=` naming another
program) the files are found here and read whole through the filesystem. A small ELF reader of our own:
the init must not import pyelftools."""

from __future__ import annotations

import os
import struct

from initfs.switchroot import resolve_in
from overlay_layout.errors import BankbootError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 1, 5, 15, 29
ELF_MACHINES = {"x86_64": (62, 2), "aarch64": (183, 2), "armv7l": (40, 1), "armv8l": (40, 1), "armv6l": (40, 1)}
MACHINE_NAMES = {62: "x86_64", 183: "aarch64", 40: "arm", 3: "i386"}
LIB_DIRS = ("/lib/{t}", "/usr/lib/{t}", "/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib")
TRIPLETS = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "armv7l": "arm-linux-gnueabihf",
            "armv8l": "arm-linux-gnueabihf", "armv6l": "arm-linux-gnueabihf"}
MAX_FILES = 200


class PreflightError(BankbootError):
    pass


def read_all(host: str, shown: str) -> bytes:
    """The first 64 KiB (for parsing); the rest is read and dropped, only to prove it reads."""
    try:
        with open(host, "rb", buffering=0) as f:
            head = f.read(65536)
            while f.read(1 << 20):
                pass
    except OSError as e:
        raise PreflightError(f"{shown} cannot be read: {e.strerror}") from e
    return head


def read_head(host: str, shown: str) -> bytes:
    try:
        with open(host, "rb") as f:
            return f.read(65536)
    except OSError as e:
        raise PreflightError(f"{shown} cannot be read: {e.strerror}") from e


class Elf:
    def __init__(self, data: bytes, f: BinaryIO, shown: str) -> None:
        if len(data) < 52 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
            raise PreflightError(f"{shown} is not an ELF file")
        self.bits64 = data[4] == 2
        self.end = "<" if data[5] == 1 else ">"
        self.machine = struct.unpack_from(self.end + "H", data, 18)[0]
        self.f = f
        self.shown = shown
        if self.bits64:
            phoff, = struct.unpack_from(self.end + "Q", data, 0x20)
            phentsize, phnum = struct.unpack_from(self.end + "HH", data, 0x36)
        else:
            phoff, = struct.unpack_from(self.end + "I", data, 0x1C)
            phentsize, phnum = struct.unpack_from(self.end + "HH", data, 0x2A)
        self.segments: list[tuple[int, int, int, int]] = []  # (type, offset, vaddr, filesz)
        table = self._read(phoff, phentsize * min(phnum, 256))
        for i in range(min(phnum, 256)):
            e = table[i * phentsize:(i + 1) * phentsize]
            if self.bits64 and len(e) >= 56:
                p_type, _, off, vaddr, _, filesz = struct.unpack_from(self.end + "IIQQQQ", e)
            elif not self.bits64 and len(e) >= 32:
                p_type, off, vaddr, _, filesz = struct.unpack_from(self.end + "IIIII", e)
            else:
                raise PreflightError(f"{shown}: truncated program headers")
            self.segments.append((p_type, off, vaddr, filesz))

    def _read(self, offset: int, size: int) -> bytes:
        try:
            self.f.seek(offset)
            return self.f.read(size)
        except (OSError, ValueError) as e:
            raise PreflightError(f"{self.shown} cannot be read: {e}") from e

    def interp(self) -> str | None:
        for p_type, off, _, filesz in self.segments:
            if p_type == PT_INTERP:
                return self._read(off, min(filesz, 4096)).split(b"\0", 1)[0].decode(errors="replace")
        return None

    def _offset(self, vaddr: int) -> int | None:
        for p_type, off, start, filesz in self.segments:
            if p_type == PT_LOAD and start <= vaddr < start + filesz:
                return off + vaddr - start
        return None

    def dynamic(self) -> tuple[list[str], list[str]]:
        """(DT_NEEDED names, RUNPATH/RPATH dirs)."""
        dyn = next(((off, filesz) for t, off, _, filesz in self.segments if t == PT_DYNAMIC), None)
        if dyn is None:
            return [], []
        data = self._read(dyn[0], min(dyn[1], 1 << 16))
        fmt, size = (self.end + "qQ", 16) if self.bits64 else (self.end + "iI", 8)
        entries = [struct.unpack_from(fmt, data, i) for i in range(0, len(data) - size + 1, size)]
        strtab = next((v for t, v in entries if t == DT_STRTAB), None)
        base = self._offset(strtab) if strtab is not None else None
        if base is None:
            return [], []

        def string(off: int) -> str:
            return self._read(base + off, 4096).split(b"\0", 1)[0].decode(errors="replace")

        needed, paths = [], []
        for tag, value in entries:
            if tag == 0:
                break
            if tag == DT_NEEDED:
                needed.append(string(value))
            elif tag in (DT_RPATH, DT_RUNPATH):
                paths += [p for p in string(value).split(":") if p]
        return needed, paths


def _ld_so_conf(newroot: str) -> list[str]:
    dirs: list[str] = []
    conf_d = newroot + "/etc/ld.so.conf.d"
    names = sorted(os.listdir(conf_d)) if os.path.isdir(conf_d) else []
    for path in [newroot + "/etc/ld.so.conf", *(f"{conf_d}/{n}" for n in names if n.endswith(".conf"))]:
        try:
            with open(path, errors="replace") as f:
                dirs += [ln.strip() for ln in f if ln.strip().startswith("/")]
        except OSError:
            continue
    return dirs


def preflight(newroot: str, init: str) -> int:
    """Check that `init` can start in newroot, reading every file it needs whole. Returns how many."""
    return len(init_files(newroot, init))


def init_files(newroot: str, init: str, machine: str | None = None, whole: bool = True,
               fetch: Callable[[str], None] | None = None) -> list[str]:
    """The files `init` needs to start in newroot (paths inside it, symlinks resolved), first the init;
    PreflightError names the first that is missing or not for `machine` (default: this one's). whole: read
    each file to its end (the boot's check), else only its head (the builder's). fetch: called with each
    file's path before it is read (the builder fills in files of an image it never unpacked)."""
    machine = machine or os.uname().machine
    triplet = TRIPLETS.get(machine, "")
    search = [d.format(t=triplet) for d in LIB_DIRS] + _ld_so_conf(newroot)
    seen: list[str] = []
    todo: list[tuple[str, str, list[str]]] = [(init, "the image's init", [])]
    while todo:
        path, why, extra = todo.pop()
        host = resolve_in(newroot, path)
        if host is None:
            raise PreflightError(f"{path} ({why}): too many levels of symlinks in the image")
        if host[len(newroot):] in seen:
            continue
        seen.append(host[len(newroot):])
        if len(seen) > MAX_FILES:
            raise PreflightError(f"{init} needs more than {MAX_FILES} files")
        if fetch is not None:
            fetch(host)
        if not os.path.isfile(host):
            raise PreflightError(f"{path} ({why}) is missing from the image")
        shown = f"{path} ({why})"
        head = read_all(host, shown) if whole else read_head(host, shown)
        if head[:2] == b"#!":
            interp = head[2:].split(b"\n", 1)[0].strip().split()
            if not interp:
                raise PreflightError(f"{shown} is a script without an interpreter")
            todo.append((interp[0].decode(errors="replace"), f"interpreter of {path}", []))
            continue
        with open(host, "rb") as f:
            elf = Elf(head, f, shown)
            want = ELF_MACHINES.get(machine)
            if want and (elf.machine != want[0] or (2 if elf.bits64 else 1) != want[1]):
                raise PreflightError(f"{shown} is built for {MACHINE_NAMES.get(elf.machine, elf.machine)} "
                                     f"({64 if elf.bits64 else 32}-bit); this kernel runs {machine}")
            interp_path = elf.interp()
            needed, runpath = elf.dynamic()
        if interp_path:
            todo.append((interp_path, f"ELF interpreter of {path}", []))
        origin = os.path.dirname(host[len(newroot):] or "/")
        dirs = [p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for p in runpath] + extra
        for lib in needed:
            found = _find_lib(newroot, lib, dirs + search)
            if found is None:
                raise PreflightError(f"{lib}, needed by {path}, is not in the image "
                                     f"(looked in {', '.join(dict.fromkeys(dirs + search))})")
            todo.append((found, f"needed by {path}", dirs))
    return seen


def verify_ranges(device: str, ranges: list[list[int]], shown: str) -> int:
    """Read the byte ranges of `device` (the image's verity device) the signed manifest names for its init
    and libraries: dm-verity checks every block, nothing is decompressed. Returns the bytes read."""
    buf = memoryview(bytearray(1 << 20))
    done = 0
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise PreflightError(f"cannot open {device} to check {shown}: {e.strerror}") from e
    try:
        for offset, length in ranges:
            pos = offset
            while pos < offset + length:
                want = min(len(buf), offset + length - pos)
                try:
                    n = os.preadv(fd, [buf[:want]], pos)
                except OSError as e:
                    raise PreflightError(f"{shown} does not read back at byte {pos} of the image: {e.strerror} "
                                         f"(a damaged block)") from e
                if n <= 0:
                    raise PreflightError(f"{shown}: the image ends at byte {pos}, before the signed ranges do")
                pos += n
                done += n
    finally:
        os.close(fd)
    return done


def _find_lib(newroot: str, name: str, dirs: list[str]) -> str | None:
    if "/" in name:
        return name
    for d in dirs:
        candidate = f"{d.rstrip('/')}/{name}"
        host = resolve_in(newroot, candidate)
        if host is not None and os.path.exists(host):
            return candidate
    return None
