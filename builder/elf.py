"""Shared-library closure of ELF programs, read with pyelftools inside a sysroot (never ldd: it cannot read
another architecture's binaries and it would run them). Models what ld.so does: PT_INTERP, DT_NEEDED,
DT_RPATH/DT_RUNPATH with $ORIGIN, then the multiarch default directories; a library of the wrong machine
is skipped as ld.so skips it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from builder.arch import Arch
from builder.errors import BuildError

ELF_MAGIC = b"\x7fELF"


class ElfError(BuildError):
    pass


@dataclass(frozen=True)
class ElfInfo:
    machine: str
    elfclass: int
    interp: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def read_elf(path: Path) -> ElfInfo:
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            interp = None
            needed: list[str] = []
            rpath: list[str] = []
            runpath: list[str] = []
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    interp = seg.get_interp_name()  # type: ignore[attr-defined]  # set by pyelftools at run time
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    for tag in sec.iter_tags():
                        if tag.entry.d_tag == "DT_NEEDED":
                            needed.append(tag.needed)  # type: ignore[attr-defined]  # set by pyelftools at run time
                        elif tag.entry.d_tag == "DT_RPATH":
                            rpath.extend(tag.rpath.split(":"))  # type: ignore[attr-defined]  # set by pyelftools at run time
                        elif tag.entry.d_tag == "DT_RUNPATH":
                            runpath.extend(tag.runpath.split(":"))  # type: ignore[attr-defined]  # set by pyelftools at run time
            return ElfInfo(elf["e_machine"], elf.elfclass, interp, tuple(needed), tuple(rpath), tuple(runpath))
    except (ELFError, OSError) as e:
        raise ElfError(f"{path}: not a readable ELF file: {e}") from None


def default_dirs(arch: Arch) -> list[str]:
    t = arch.triplet
    return [f"/lib/{t}", f"/usr/lib/{t}", "/lib", "/usr/lib", "/lib64", "/usr/lib64", "/lib32", "/usr/lib32"]


def resolve_in_root(root: Path, path: str, links: list[tuple[str, str]] | None = None) -> str:
    """Resolve `path` as if `root` were / (symlinks in it are followed inside root, absolute targets
    re-rooted). Each symlink met on the way is appended to `links` as (path, target) so a copy can keep the
    chain. Returns the final root-relative path, which may not exist."""
    parts = [p for p in PurePosixPath(path).parts if p != "/"]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        cur = "/" + "/".join([*done, part])
        host = root / cur.lstrip("/")
        if host.is_symlink():
            hops += 1
            if hops > 40:
                raise ElfError(f"too many symlinks resolving {path} in {root}")
            target = os.readlink(host)
            if links is not None:
                links.append((cur, target))
            if target.startswith("/"):
                done = []
            parts = [p for p in PurePosixPath(target).parts if p != "/"] + parts
        else:
            done.append(part)
    return "/" + "/".join(done)


@dataclass
class Closure:
    files: set[str]  # root-relative paths of regular files to copy (absolute in the target)
    links: dict[str, str]  # symlink path -> target, to recreate as they are


class LibraryResolver:
    """Finds libraries for programs of one architecture inside `root` (a sysroot, or / for the host)."""

    def __init__(self, root: Path, arch: Arch, extra_dirs: list[str] | None = None) -> None:
        self.root = root
        self.arch = arch
        self.dirs = [*(extra_dirs or []), *default_dirs(arch)]
        self.closure = Closure(set(), {})
        self._seen: set[str] = set()

    def _matches(self, host_path: Path) -> bool:
        if not host_path.is_file() or not is_elf(host_path):
            return False
        try:
            info = read_elf(host_path)
        except ElfError:
            return False
        return info.machine == self.arch.elf_machine and info.elfclass == self.arch.elf_class

    def _add_path(self, path: str) -> str:
        links: list[tuple[str, str]] = []
        final = resolve_in_root(self.root, path, links)
        for link, target in links:
            self.closure.links[link] = target
        self.closure.files.add(final)
        return final

    def find(self, name: str, origin: str, info: ElfInfo, provided: list[Path]) -> str | None:
        """Returns the target path of library `name` needed by an ELF whose directory is `origin`
        (target path), or None if it is one of `provided` (host dirs that ship with the program)."""
        for d in provided:
            if self._matches(d / name):
                return None
        if "/" in name:
            candidates = [name]
        else:
            def expand(ds: tuple[str, ...]) -> list[str]:
                return [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in ds if d]
            search = expand(info.rpath) if not info.runpath else []
            search += expand(info.runpath) + self.dirs
            candidates = [f"{d}/{name}" for d in search]
        for cand in candidates:
            real = resolve_in_root(self.root, cand)
            if self._matches(self.root / real.lstrip("/")):
                return self._add_path(cand)
        return ""

    def add_program(self, host_path: Path, target_path: str, provided: list[Path] | None = None) -> None:
        """Add the closure of the ELF at host_path, which will live at target_path. Libraries found in
        `provided` directories (bundled with the program) are not copied. A missing library is an error
        naming the program that needs it."""
        info = read_elf(host_path)
        if info.machine != self.arch.elf_machine:
            raise ElfError(f"{host_path} is {info.machine}, not {self.arch.elf_machine} for {self.arch.debian}")
        if info.interp:
            interp_real = resolve_in_root(self.root, info.interp)
            if not (self.root / interp_real.lstrip("/")).is_file():
                raise ElfError(f"{target_path} needs the program interpreter {info.interp}, not found in "
                               f"{self.root}")
            self._add_library(info.interp, [])
        origin = str(PurePosixPath(target_path).parent)
        for name in info.needed:
            found = self.find(name, origin, info, provided or [])
            if found == "":
                raise ElfError(f"{target_path} needs {name}, which is not in {self.root} "
                               f"(searched {', '.join(self.dirs)})")
            if found:
                self._add_library(found, provided or [])

    def _add_library(self, path: str, provided: list[Path]) -> None:
        final = self._add_path(path)
        if final in self._seen:
            return
        self._seen.add(final)
        self.add_program(self.root / final.lstrip("/"), final, provided)
