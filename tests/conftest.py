"""Shared fixtures and the test tiers. A test's tier is its directory:

    tests/unit  pure Python: runs anywhere in seconds, needs nothing but the venv
    tests/host  needs host tools (mksquashfs, veritysetup, cpio, ...) or the Debian parts cache (make deps)
    tests/vm    boots real kernels under QEMU

`make test` runs all three. A missing tool or part fails loudly, but only the tiers that need it: CI must
not go green by skipping, and a pure-Python change must not need QEMU to be tested."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from builder.board import Board
from builder.paths import build_dir
from tests.fixtures import BoardParts, KeyPair, board_parts

TIERS = ("unit", "host", "vm")
HOST_TOOLS = ["cpio", "zstd", "lz4", "depmod", "veritysetup", "mksquashfs", "unsquashfs", "mkfs.ext4", "mkfs.vfat",
              "mcopy", "sfdisk", "debugfs", "e2fsck", "qemu-arm-static", "qemu-aarch64-static",
              # bankctl's launcher (builder/launcher.py), in every initramfs
              "x86_64-linux-gnu-gcc-12", "aarch64-linux-gnu-gcc-12", "arm-linux-gnueabihf-gcc-12"]
SBIN = ("/sbin", "/usr/sbin")  # not on a non-root PATH
VM_TOOLS = ["qemu-system-aarch64", "qemu-system-x86_64", "qemu-system-arm"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/host or tests/vm")
        item.add_marker(tier)


def _missing(tools: list[str]) -> list[str]:
    return [t for t in tools if shutil.which(t) is None and not any(Path(d, t).exists() for d in SBIN)]


_checked: dict[str, list[str]] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Host and VM tests need their tools: fail (never skip) naming what is missing."""
    for tier, tools in (("host", HOST_TOOLS), ("vm", HOST_TOOLS + VM_TOOLS)):
        if item.get_closest_marker(tier) is not None:
            if tier not in _checked:
                _checked[tier] = _missing(tools)
            if _checked[tier]:
                pytest.fail(f"missing tools for the {tier} tests: {', '.join(_checked[tier])}: run `make deps`",
                            pytrace=False)


@pytest.fixture(scope="session")
def test_dir() -> Path:
    """build/tests, one directory per pytest-xdist worker (`make test` runs two): each builds its own disks,
    keys and initramfs; what they share (build/cache) is made under builder/cachelock.py's locks."""
    d = build_dir() / "tests" / os.environ.get("PYTEST_XDIST_WORKER", "main")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def aarch64() -> BoardParts:
    return board_parts("qemu-aarch64")


@pytest.fixture(scope="session")
def x86_64() -> BoardParts:
    return board_parts("qemu-x86_64")


@pytest.fixture(scope="session")
def signing_key(test_dir: Path) -> KeyPair:
    """The test suite's release key pair, made once."""
    from builder.keys import keygen

    prefix = test_dir / "keys" / "release"
    if not prefix.with_suffix(".key").exists():
        keygen(prefix, "bankboot test suite")
    return KeyPair(prefix.with_suffix(".key"), prefix.with_suffix(".pub"))


@pytest.fixture(scope="session")
def trust_policy(signing_key: KeyPair):
    from builder.initramfs import TrustPolicy

    return TrustPolicy(keys=(signing_key.public,))


_built: dict[str, Path] = {}


@pytest.fixture(scope="session")
def built_initramfs(test_dir: Path, trust_policy):
    """build_initramfs(board) once per test session per board, trusting the test key: the image path."""
    from builder.initramfs import build_initramfs

    def build(board: Board) -> Path:
        if board.name not in _built:
            out = test_dir / board.name
            out.mkdir(exist_ok=True)
            _built[board.name] = build_initramfs(board, out / "initramfs.img", policy=trust_policy).path
        return _built[board.name]

    return build
