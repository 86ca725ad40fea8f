"""The assembled initramfs, inspected with GNU cpio (the frozen init comes from the freeze cache)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from builder.compress import decompress
from builder.cpio import write_cpio
from builder.initramfs import assemble, build_initramfs


@pytest.fixture(scope="module")
def listing(aarch64, trust_policy) -> dict[str, str]:
    board, _, _ = aarch64
    tree, _ = assemble(board, policy=trust_policy)
    out = io.BytesIO()
    write_cpio(tree, out)
    text = subprocess.run(["cpio", "-t", "-v", "--quiet"], input=out.getvalue(), capture_output=True,
                          check=True).stdout.decode()
    result = {}
    for line in text.splitlines():
        parts = line.split()
        name = parts[-3] if "->" in parts else parts[-1]
        result[name] = line
    return result


def test_contains_the_frozen_init_busybox_and_console(listing: dict[str, str], aarch64) -> None:
    _, kernel, _ = aarch64
    assert listing["init"].startswith("-rwx")
    assert "bankboot/libpython3.11.so.1.0" in listing
    assert listing["dev/console"].startswith("crw-------")
    assert listing["bin/busybox"].startswith("-rwx")
    assert listing["bin/sh"].endswith("-> busybox")
    # No applet links: busybox's shell runs its applets without them (a test boots the rescue shell).
    assert "sbin/insmod" not in listing and "bin/mount" not in listing
    # What the PyInstaller bootloader needs before LD_LIBRARY_PATH exists, at the system paths.
    for lib in ["ld-linux-aarch64.so.1", "libc.so.6", "libdl.so.2", "libpthread.so.0", "libz.so.1"]:
        assert f"lib/aarch64-linux-gnu/{lib}" in listing, lib
    # libpython carries the libm functions it calls (builder/leanpython.py, STATIC_LIBM); nothing else needs libm.
    assert "lib/aarch64-linux-gnu/libm.so.6" not in listing
    assert listing["lib/ld-linux-aarch64.so.1"].endswith("-> aarch64-linux-gnu/ld-linux-aarch64.so.1")
    assert f"lib/modules/{kernel.version}/modules.dep" in listing
    assert f"lib/modules/{kernel.version}/kernel/fs/squashfs/squashfs.ko" in listing


def test_only_the_boards_modules_and_their_dependencies(listing: dict[str, str], aarch64) -> None:
    _, _kernel, _ = aarch64
    kos = sorted(Path(n).name for n in listing if n.endswith(".ko"))
    assert "ext4.ko" in kos and "jbd2.ko" in kos and "overlay.ko" in kos
    assert {"virtio_net.ko", "net_failover.ko", "failover.ko"} <= set(kos)  # the NIC and what it needs
    assert "btrfs.ko" not in kos and len(kos) < 32
    assert {"sha2-ce.ko", "sha256-arm64.ko"} <= set(kos)  # optional_modules: faster SHA-256 where the CPU has it
    # FAT is carried for `bankctl install-loader` (etc/bankboot/modules.vfat), not loaded at boot.
    assert {"fat.ko", "vfat.ko", "nls_cp437.ko"} <= set(kos)


def test_two_builds_are_byte_identical(aarch64, tmp_path: Path, trust_policy) -> None:
    board, _, _ = aarch64
    a = build_initramfs(board, tmp_path / "a.img", compression_method="gzip", policy=trust_policy)
    b = build_initramfs(board, tmp_path / "b.img", compression_method="gzip", policy=trust_policy)
    assert a.path.read_bytes() == b.path.read_bytes()
    raw = decompress(a.path.read_bytes(), "gzip")
    assert raw.startswith(b"070701") and len(raw) == a.unpacked


def test_trusted_keys_and_policy_are_in_the_initramfs(listing: dict[str, str], signing_key) -> None:
    from overlay_layout.trust import key_id, read_public_key

    kid = key_id(read_public_key(str(signing_key.public)))
    assert f"etc/bankboot/trust/{kid}.pub" in listing


def test_no_key_and_no_insecure_flag_is_refused(aarch64) -> None:
    board, _, _ = aarch64
    with pytest.raises(ValueError, match="no trusted key"):
        assemble(board)


def test_kexec_tools_runs_with_the_xen_shim_alone(aarch64, trust_policy, tmp_path: Path) -> None:
    """arm64's kernel has only kexec_load, so Debian's kexec-tools rides along; its Xen libraries do not (the
    shim answers for libxenctrl: builder/xenshim.py), and kexec still starts from the initramfs's own files."""
    board, _, _ = aarch64
    tree, _ = assemble(board, policy=trust_policy)
    xen = sorted(p for p in tree.entries if "libxen" in p)
    assert xen == ["usr/lib/aarch64-linux-gnu/libxenctrl.so.4.17"]
    assert len(tree.entries[xen[0]].read()) < 8192
    for path, entry in tree.entries.items():  # the initramfs's programs and libraries, as the device has them
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.kind == "file":
            target.write_bytes(entry.read())
            target.chmod(0o755)
        elif entry.kind == "symlink":
            target.symlink_to(entry.target)
    got = subprocess.run(["qemu-aarch64-static", "-L", str(tmp_path), str(tmp_path / "sbin/kexec"), "--version"],
                         capture_output=True, text=True)
    assert got.returncode == 0 and got.stdout.startswith("kexec-tools"), got.stderr
    got = subprocess.run(["qemu-aarch64-static", "-L", str(tmp_path), str(tmp_path / "sbin/kexec"), "-l",
                          str(tmp_path / "no-such-kernel")], capture_output=True, text=True)
    assert got.returncode != 0 and "no-such-kernel" in got.stderr
