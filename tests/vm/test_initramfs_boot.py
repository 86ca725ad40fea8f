"""Boot the built initramfs under QEMU and ask the guest itself what it sees."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from builder.compress import compress
from builder.cpio import write_cpio
from builder.initramfs import assemble
from builder.lab.boot import board_vm
from initfs import VERSION
from tests.fixtures import Booted

pytestmark = pytest.mark.vm
BOOT_TIMEOUT = 120


@pytest.fixture(scope="module", params=["aarch64", "x86_64"])
def booted(request, test_dir: Path, built_initramfs):
    board, kernel, _ = request.getfixturevalue(request.param)
    out = test_dir / board.name
    initrd = built_initramfs(board)
    disk = out / "blank.img"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    with board_vm(board, initrd, disks=[disk], log_dir=out) as vm:
        vm.console.expect(r"starting a rescue shell", BOOT_TIMEOUT)
        vm.console.expect(r"rescue\) / # ", 30)
        yield Booted(vm, board, kernel)


def test_banner_names_version_and_kernel(booted) -> None:
    vm, kernel = booted.vm, booted.kernel
    assert re.search(rf"bankboot {re.escape(VERSION)} init on Linux {re.escape(kernel.version)} ",
                     vm.console.text())
    rc, out = vm.console.run("uname -r")
    assert rc == 0 and out.strip() == kernel.version


def test_pid1_is_our_frozen_init(booted) -> None:
    vm = booted.vm
    rc, out = vm.console.run("tr '\\0' ' ' < /proc/1/cmdline; echo; readlink /proc/1/exe")
    assert rc == 0
    assert out.split() == ["/init", "/init"]


def test_filesystems_for_banks_are_available(booted) -> None:
    vm = booted.vm
    rc, out = vm.console.run("cat /proc/filesystems")
    assert rc == 0
    fs = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert {"squashfs", "overlay", "ext4", "devtmpfs"} <= fs


def test_dev_has_console_and_the_disk(booted) -> None:
    vm = booted.vm
    rc, out = vm.console.run("test -c /dev/console && test -b /dev/vda && cat /sys/block/vda/size")
    assert rc == 0, out
    assert int(out.strip()) == (8 << 20) // 512


def test_early_mounts_are_there_once(booted) -> None:
    vm = booted.vm
    rc, out = vm.console.run("cat /proc/mounts")
    assert rc == 0
    targets = [line.split()[1] for line in out.splitlines() if line.strip()]
    for t in ["/proc", "/sys", "/dev", "/run"]:
        assert targets.count(t) == 1, out


def test_children_get_a_clean_environment(booted) -> None:
    vm = booted.vm
    rc, out = vm.console.run("env")
    assert rc == 0
    assert "LD_LIBRARY_PATH" not in out and "_PYI" not in out and "_MEI" not in out
    assert "PATH=/usr/sbin:/usr/bin:/sbin:/bin" in out


def test_a_failure_ends_in_a_rescue_shell_not_a_panic(aarch64, test_dir: Path, trust_policy) -> None:
    """A module list naming a file that is not there: the init says what failed and still gives a shell."""
    board, _, _ = aarch64
    tree, kernel = assemble(board, policy=trust_policy)
    tree.entries["etc/bankboot/modules"].data += b"kernel/fs/nothere.ko\n"
    raw = io.BytesIO()
    write_cpio(tree, raw)
    out = test_dir / "broken"
    out.mkdir(exist_ok=True)
    initrd = out / "initramfs.img"
    initrd.write_bytes(compress(raw.getvalue(), "gzip"))
    with board_vm(board, initrd, log_dir=out) as vm:
        vm.console.expect(rf"cannot open module /lib/modules/{re.escape(kernel.version)}/kernel/fs/nothere.ko",
                          BOOT_TIMEOUT)
        vm.console.expect(r"rescue\) / # ", 30)
        rc, pid1 = vm.console.run("readlink /proc/1/exe")
        assert rc == 0 and pid1.strip() == "/init"
    assert "Kernel panic" not in vm.console.text()


def test_qmp_status_reset_and_quit(aarch64, test_dir: Path, built_initramfs) -> None:
    """The harness's QMP side, on the guest: a system_reset boots the init a second time."""
    board, _, _ = aarch64
    initrd = built_initramfs(board)
    out = test_dir / "qmp"
    out.mkdir(exist_ok=True)
    with board_vm(board, initrd, log_dir=out, reboot=True) as vm:
        vm.console.expect(r"rescue\) / # ", BOOT_TIMEOUT)
        assert vm.status() == "running"
        rc, boot_id = vm.console.run("cat /proc/sys/kernel/random/boot_id")
        assert rc == 0
        vm.system_reset()
        vm.console.expect(r"Booting Linux", BOOT_TIMEOUT)
        vm.console.expect(r"rescue\) / # ", BOOT_TIMEOUT)
        rc, boot_id2 = vm.console.run("cat /proc/sys/kernel/random/boot_id")
        assert rc == 0 and boot_id2.strip() != boot_id.strip()
        vm.quit()
        assert vm.proc.returncode is not None
