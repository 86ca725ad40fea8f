"""ELF closure on real binaries: the host's (native) and Debian's arm64 ones (cross)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from builder.arch import get_arch, host_arch
from builder.elf import ElfError, LibraryResolver, read_elf, resolve_in_root


def test_native_closure_of_a_host_tool() -> None:
    tool = Path(os.path.realpath(shutil.which("mksquashfs") or "/usr/bin/mksquashfs"))  # a tool make deps installs
    r = LibraryResolver(Path("/"), host_arch())
    r.add_program(tool, str(tool))
    names = {Path(f).name for f in r.closure.files}
    assert {"libc.so.6", "libm.so.6"} <= names
    assert any(n.startswith("libz.so.1") for n in names)
    assert any(n.startswith("ld-linux") for n in names)
    assert all(Path(f).is_file() for f in r.closure.files)


def test_cross_closure_in_the_arm64_sysroot_keeps_symlink_chains(aarch64) -> None:
    _, _, sysroot = aarch64
    r = LibraryResolver(sysroot.root, get_arch("arm64"))
    r.add_program(sysroot.root / "usr/bin/python3.11", "/usr/bin/python3.11")
    files = r.closure.files
    assert "/lib/aarch64-linux-gnu/libc.so.6" in files
    assert "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1" in files
    # PT_INTERP is /lib/ld-linux-aarch64.so.1, a symlink in Debian's libc6: kept as a link.
    assert r.closure.links["/lib/ld-linux-aarch64.so.1"] == "aarch64-linux-gnu/ld-linux-aarch64.so.1"
    # libz.so.1 -> libz.so.1.2.x: the link and the real file both go in.
    assert "/lib/aarch64-linux-gnu/libz.so.1" in r.closure.links
    assert any(f.startswith("/lib/aarch64-linux-gnu/libz.so.1.") for f in files)
    for f in files:
        assert read_elf(sysroot.root / f.lstrip("/")).machine == "EM_AARCH64"


def test_missing_library_names_the_binary_that_needs_it(aarch64, tmp_path: Path) -> None:
    _, _, sysroot = aarch64
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "lib").mkdir()
    shutil.copy(sysroot.root / "usr/bin/python3.11", root / "usr/bin/python3.11")
    shutil.copy(sysroot.root / "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", root / "lib/ld-linux-aarch64.so.1")
    r = LibraryResolver(root, get_arch("arm64"))
    with pytest.raises(ElfError, match=r"/usr/bin/python3.11 needs lib.*\.so"):
        r.add_program(root / "usr/bin/python3.11", "/usr/bin/python3.11")


def test_library_of_another_machine_is_skipped_like_ld_so_does(aarch64, tmp_path: Path) -> None:
    """An x86_64 libc in the first search directory must not satisfy an arm64 program."""
    _, _, sysroot = aarch64
    root = tmp_path / "root"
    shutil.copytree(sysroot.root / "lib", root / "lib", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy(sysroot.root / "usr/bin/python3.11", root / "usr/bin/")
    (root / "opt").mkdir()
    host_libc = Path("/lib/x86_64-linux-gnu/libc.so.6").resolve()
    shutil.copy(host_libc, root / "opt/libc.so.6")
    r = LibraryResolver(root, get_arch("arm64"), extra_dirs=["/opt"])
    r.add_program(root / "usr/bin/python3.11", "/usr/bin/python3.11")
    assert "/opt/libc.so.6" not in r.closure.files
    assert "/lib/aarch64-linux-gnu/libc.so.6" in r.closure.files


def test_wrong_architecture_program_is_refused(aarch64) -> None:
    _, _, sysroot = aarch64
    r = LibraryResolver(sysroot.root, get_arch("amd64"))
    with pytest.raises(ElfError, match="EM_AARCH64, not EM_X86_64"):
        r.add_program(sysroot.root / "usr/bin/python3.11", "/usr/bin/python3.11")


def test_resolve_in_root_never_leaves_the_root(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/escape").symlink_to("/../../etc")
    links: list = []
    assert resolve_in_root(tmp_path, "/lib/escape/passwd", links) == "/etc/passwd"
    assert links == [("/lib/escape", "/../../etc")]
