"""Shared fixtures. Missing tools or parts fail loudly (CI must not go green by skipping)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder.board import load_board
from builder.parts import PartsError, locate_busybox, locate_kernel
from builder.paths import build_dir
from builder.pysysroot import SysrootError, locate_sysroot

REQUIRED_TOOLS = ["cpio", "zstd", "lz4", "depmod", "qemu-system-aarch64", "qemu-system-x86_64", "qemu-system-arm",
                  "qemu-arm-static", "veritysetup", "mksquashfs", "mkfs.ext4", "mkfs.vfat", "mcopy", "sfdisk",
                  "qemu-aarch64-static"]


@pytest.fixture(scope="session", autouse=True)
def _tools_present() -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)}: run `make deps`", pytrace=False)


@pytest.fixture(scope="session")
def test_dir() -> Path:
    d = build_dir() / "tests"
    d.mkdir(parents=True, exist_ok=True)
    return d


def board_parts(name: str):
    board = load_board(name)
    try:
        kernel = locate_kernel(board)
        locate_busybox(board.arch)
        sysroot = locate_sysroot(board.arch)
    except (PartsError, SysrootError) as e:
        pytest.fail(str(e), pytrace=False)
    return board, kernel, sysroot


@pytest.fixture(scope="session")
def aarch64():
    return board_parts("qemu-aarch64")


@pytest.fixture(scope="session")
def x86_64():
    return board_parts("qemu-x86_64")


_built: dict[str, Path] = {}


@pytest.fixture(scope="session")
def signing_key(test_dir: Path) -> tuple[Path, Path]:
    """The test suite's release key pair (private, public), made once."""
    from builder.keys import keygen

    prefix = test_dir / "keys" / "release"
    if not prefix.with_suffix(".key").exists():
        keygen(prefix, "bankboot test suite")
    return prefix.with_suffix(".key"), prefix.with_suffix(".pub")


@pytest.fixture(scope="session")
def trust_policy(signing_key):
    from builder.initramfs import TrustPolicy

    return TrustPolicy(keys=(signing_key[1],))


@pytest.fixture(scope="session")
def built_initramfs(test_dir: Path, trust_policy):
    """build_initramfs(board) once per test session per board, trusting the test key: the image path."""
    from builder.initramfs import build_initramfs

    def build(board) -> Path:
        if board.name not in _built:
            out = test_dir / board.name
            out.mkdir(exist_ok=True)
            _built[board.name] = build_initramfs(board, out / "initramfs.img", policy=trust_policy).path
        return _built[board.name]

    return build
