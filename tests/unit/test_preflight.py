"""Preflight reads the image's init, its interpreter and its libraries; what is missing or built for
another machine is named."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from initfs.preflight import PreflightError, preflight


def test_a_host_program_and_its_libraries_read_back() -> None:
    assert preflight("/", "/bin/ls") >= 3  # ls, ld.so, libc at least


def test_a_missing_library_is_named(tmp_path: Path) -> None:
    (tmp_path / "sbin").mkdir()
    shutil.copy("/bin/ls", tmp_path / "sbin/init")
    with pytest.raises(PreflightError, match=r"lib.*needed by /sbin/init, is not in the image"):
        preflight(str(tmp_path), "/sbin/init")


def test_symlinks_resolve_inside_the_image_and_scripts_need_their_interpreter(tmp_path: Path) -> None:
    (tmp_path / "sbin").mkdir()
    (tmp_path / "etc").mkdir()
    os.symlink("/etc/init.sh", tmp_path / "sbin/init")  # absolute: inside the image, not the host
    (tmp_path / "etc/init.sh").write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(PreflightError, match=r"/bin/sh \(interpreter of /sbin/init\) is missing"):
        preflight(str(tmp_path), "/sbin/init")


def test_a_loop_and_a_missing_init_are_named(tmp_path: Path) -> None:
    (tmp_path / "sbin").mkdir()
    os.symlink("init", tmp_path / "sbin/init")
    with pytest.raises(PreflightError, match="too many levels of symlinks"):
        preflight(str(tmp_path), "/sbin/init")
    with pytest.raises(PreflightError, match="missing from the image"):
        preflight(str(tmp_path), "/sbin/nothing")


