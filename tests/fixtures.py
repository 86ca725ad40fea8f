"""What the shared fixtures return: small records with named fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builder.board import Board, load_board
from builder.parts import KernelParts, PartsError, locate_busybox, locate_kernel
from builder.pysysroot import PySysroot, SysrootError, locate_sysroot
from qemu.vm import VM


@dataclass(frozen=True)
class Bank:
    """A signed bank file and its manifest."""

    path: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class BootDisk:
    """A disk made by `bankboot disk` with its one image current."""

    board: Board
    path: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Booted:
    """A running VM of a board, and the kernel it booted."""

    vm: VM
    board: Board
    kernel: KernelParts


@dataclass(frozen=True)
class DeviceKit:
    """The lifecycle tests' base disk (1.0.0 current) and their update banks: name -> (file, manifest)."""

    board: Board
    out: Path
    disk: Path
    banks: dict[str, tuple[Path, dict[str, Any]]]


@dataclass(frozen=True)
class BoardParts:
    """A board and the fetched parts a build for it needs."""

    board: Board
    kernel: KernelParts
    sysroot: PySysroot

    def __iter__(self):  # `board, kernel, sysroot = aarch64` reads well at the top of a test
        return iter((self.board, self.kernel, self.sysroot))


def board_parts(name: str) -> BoardParts:
    board = load_board(name)
    try:
        kernel = locate_kernel(board)
        locate_busybox(board.arch)
        sysroot = locate_sysroot(board.arch)
    except (PartsError, SysrootError) as e:
        pytest.fail(str(e), pytrace=False)
    return BoardParts(board, kernel, sysroot)


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path

    def __iter__(self):
        return iter((self.private, self.public))
