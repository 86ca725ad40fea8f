"""What a sealed initramfs carries (no shell, execute bits on the programs the init runs only), bankctl's
launcher on every architecture (run under qemu-user), and the kernel check that `rdinit=` cannot get round."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from builder.arch import ARCHES, is_native
from builder.board import load_board
from builder.initramfs import assemble, refuse_root_capable_kernel
from builder.kconfig import builtin_root_filesystems, kernel_config
from builder.launcher import build_launcher
from builder.parts import locate_kernel
from overlay_layout.contract import KIT_LIST, LAUNCHER, archive_path


def executables(tree) -> list[str]:
    return sorted(p for p, e in tree.entries.items() if e.kind == "file" and e.mode & 0o111)


def test_a_sealed_initramfs_has_no_shell_and_only_its_programs_are_executable(aarch64, trust_policy) -> None:
    board, _, _ = aarch64
    tree, _ = assemble(dataclasses.replace(board, sealed=True), policy=trust_policy)
    assert executables(tree) == ["bin/bankctl", "init", "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", "sbin/kexec"]
    assert "bin/busybox" not in tree and "bin/sh" not in tree and "sbin/insmod" not in tree
    kit = tree.get(archive_path(KIT_LIST)).read().decode().split()  # type: ignore[union-attr]
    assert archive_path(LAUNCHER) in kit and "bin/busybox" not in kit
    dev, _ = assemble(board, policy=trust_policy)  # a development build keeps its shell, and the same launcher
    assert {"bin/busybox", "bin/bankctl", "bankboot/libpython3.11.so.1.0"} <= set(executables(dev))
    assert dev.get("bin/sh").target == "busybox"  # type: ignore[union-attr]


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_the_launcher_runs_the_kits_program_through_its_ld_so(arch: str, tmp_path: Path) -> None:
    """Built for a kit at tmp_path whose `ld.so` is a script that reports what it was given."""
    a = ARCHES[arch]
    (tmp_path / "ldso").write_text('#!/bin/sh\nprintf "%s\\n" "$0" "$@"\nenv | sort\n')
    (tmp_path / "ldso").chmod(0o755)
    launcher = tmp_path / "bankctl"
    launcher.write_bytes(build_launcher(a, "/ldso", ("/lib/x", "/usr/lib/y"), kit=str(tmp_path)))
    launcher.chmod(0o755)
    runner = [] if is_native(a) else [a.qemu_user]
    env = {"PATH": os.environ["PATH"], "LD_PRELOAD": "/image/lib.so", "LD_LIBRARY_PATH": "/image/lib",
           "BANKBOOT_ENTRY": "init", "KEEP": "me"}
    out = subprocess.run([*runner, str(launcher), "status", "--json", "two words"], env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[:5] == [str(tmp_path / "ldso"), str(tmp_path / "init"), "status", "--json", "two words"]
    assert f"LD_LIBRARY_PATH={tmp_path}/lib/x:{tmp_path}/usr/lib/y" in out and "BANKBOOT_ENTRY=bankctl" in out
    assert "KEEP=me" in out and not any(v.startswith("LD_PRELOAD") for v in out)
    (tmp_path / "ldso").unlink()  # not a bankboot device: a clear message, exit 127
    proc = subprocess.run([*runner, str(launcher)], env=env, capture_output=True, text=True)
    assert proc.returncode == 127 and f"bankctl: cannot run {tmp_path}/ldso" in proc.stderr
    assert build_launcher(a, "/ldso", ("/lib/x", "/usr/lib/y"), kit=str(tmp_path)) == launcher.read_bytes()


@pytest.mark.parametrize("name", ["qemu-aarch64", "qemu-x86_64", "qemu-armv7"])
def test_the_boards_kernels_mount_no_disk_by_themselves(name: str) -> None:
    board = load_board(name)
    kernel = locate_kernel(board)
    config = kernel_config(kernel)
    assert config is not None, f"{kernel.image}: no config-{kernel.version} beside it"
    assert builtin_root_filesystems(config) == []
    refuse_root_capable_kernel(dataclasses.replace(board, sealed=True), kernel)


def test_a_kernel_that_mounts_ext4_by_itself_is_refused_for_a_sealed_build(tmp_path: Path) -> None:
    board = load_board("qemu-aarch64")
    real = locate_kernel(board)
    (tmp_path / "boot").mkdir()
    image = tmp_path / "boot" / "vmlinuz"
    image.write_bytes(b"")
    (tmp_path / "boot" / f"config-{real.version}").write_text(
        "CONFIG_EXT4_FS=y\nCONFIG_VFAT_FS=m\nCONFIG_ROOT_NFS=y\n# CONFIG_XFS_FS is not set\n")
    kernel = dataclasses.replace(real, image=image)
    assert builtin_root_filesystems(kernel_config(kernel)) == ["EXT4_FS"]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="EXT4_FS built in"):
        refuse_root_capable_kernel(dataclasses.replace(board, sealed=True), kernel)
