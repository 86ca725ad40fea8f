"""Module closure against the real modules.dep of Debian's kernels."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.kmod import ModuleError, module_closure, module_name


def names(paths: list[str]) -> list[str]:
    return [module_name(p) for p in paths]


@pytest.mark.parametrize("which", ["aarch64", "x86_64"])
def test_dependencies_load_before_the_modules_that_need_them(which: str, request) -> None:
    _, kernel, _ = request.getfixturevalue(which)
    order = names(module_closure(kernel.modules_dir, ["ext4", "overlay", "virtio_blk"]))
    for before, after in [("jbd2", "ext4"), ("mbcache", "ext4"), ("crc16", "ext4"), ("virtio", "virtio_blk"),
                          ("virtio_ring", "virtio_blk")]:
        if before in order:  # virtio core may be built in
            assert order.index(before) < order.index(after), order
    assert order.count("ext4") == 1
    assert "squashfs" not in order  # only what was asked for, plus dependencies


def test_board_order_is_kept_and_dashes_equal_underscores(aarch64) -> None:
    _, kernel, _ = aarch64
    order = names(module_closure(kernel.modules_dir, ["crc32c-generic", "loop", "squashfs"]))
    assert order == ["crc32c_generic", "loop", "squashfs"]


def test_unknown_module_is_an_error_with_suggestions(aarch64) -> None:
    _, kernel, _ = aarch64
    with pytest.raises(ModuleError, match="squashfz.*did you mean squashfs"):
        module_closure(kernel.modules_dir, ["squashfz"])


def test_built_in_module_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text("kernel/fs/a.ko: kernel/lib/b.ko\nkernel/lib/b.ko:\n")
    (tmp_path / "modules.builtin").write_text("kernel/drivers/tty/serial/8250.ko\n")
    assert module_closure(tmp_path, ["8250", "a"]) == ["kernel/lib/b.ko", "kernel/fs/a.ko"]


def test_missing_modules_dep_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ModuleError, match="run depmod"):
        module_closure(tmp_path, ["ext4"])
