"""The image pre-flight check against another architecture's programs (the fetched arm64 sysroot)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from initfs.preflight import PreflightError, preflight


def test_another_machine_is_refused(tmp_path: Path, aarch64) -> None:
    from builder.parts import locate_busybox

    board = aarch64.board
    (tmp_path / "sbin").mkdir()
    shutil.copy(locate_busybox(board.arch), tmp_path / "sbin/init")
    with pytest.raises(PreflightError, match="built for aarch64"):
        preflight(str(tmp_path), "/sbin/init")
