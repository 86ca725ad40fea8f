"""Boot a disk built by `bankboot disk` into the sample rootfs and ask the booted system what it got."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from builder.disk import build_disk
from builder.image import build_image
from builder.lab.boot import disk_vm
from builder.lab.rig import PROMPT
from builder.lab.samplerootfs import build_sample_rootfs
from qemu.vm import VM
from tests.fixtures import BootDisk

pytestmark = pytest.mark.vm
BOOT_TIMEOUT = 120
READY = r"sample-rootfs: ready"


@pytest.fixture(scope="module")
def disk(aarch64, test_dir: Path, built_initramfs, signing_key):
    board, _, _ = aarch64
    out = test_dir / "bootflow"
    out.mkdir(exist_ok=True)
    rootfs = build_sample_rootfs(board.arch, out / "rootfs", version="1.0.0")
    manifest = build_image(rootfs, "1.0.0", out / "app-1.0.0.bank", sign_key=signing_key.private)
    path = out / "disk.img"
    build_disk(board, out / "app-1.0.0.bank", path, 256 << 20, built_initramfs(board))
    return BootDisk(board, path, manifest)


def boot(board, disk: Path, log_dir: Path, **kw) -> VM:
    log_dir.mkdir(parents=True, exist_ok=True)
    return disk_vm(board, disk, log_dir, **kw)


def test_boots_into_the_image_with_overlay_userdata_and_handed_over_mounts(disk, test_dir: Path) -> None:
    board, path, manifest = disk.board, disk.path, disk.manifest
    with boot(board, path, test_dir / "bootflow" / "boot1") as vm:
        vm.console.expect(READY, BOOT_TIMEOUT)
        vm.console.expect(PROMPT, 30)
        assert "was NOT handed over" not in vm.console.text()
        rc, mounts = vm.console.run("cat /proc/mounts")
        assert rc == 0
        table = [line.split() for line in mounts.splitlines() if line.strip()]
        root = [m for m in table if m[1] == "/"]
        assert len(root) == 1 and root[0][2] == "overlay", mounts
        opts = dict(o.split("=", 1) for o in root[0][3].split(",") if "=" in o)
        assert opts["lowerdir"] == "/run/bankboot/lower"
        assert opts["upperdir"] == f"/run/bankboot/banks/overlay/{manifest['id']}/upper"
        lower = [m for m in table if m[1] == "/run/bankboot/lower"]
        assert len(lower) == 1 and lower[0][2] == "squashfs" and lower[0][3].startswith("ro"), mounts
        # The squashfs is read through dm-verity, whose data and hash devices are loops on the image's files.
        dm = Path(lower[0][0]).name
        assert dm.startswith("dm-"), mounts
        rc, backing = vm.console.run(f"for s in /sys/block/{dm}/slaves/*; do cat $s/loop/backing_file; done")
        assert rc == 0
        assert sorted(Path(b).name for b in backing.split()) == ["rootfs.squashfs", "rootfs.verity"]
        assert all(f"overlay/{manifest['id']}/" in b for b in backing.split())
        for target, fstype in [("/proc", "proc"), ("/sys", "sysfs"), ("/dev", "devtmpfs"), ("/run", "tmpfs")]:
            assert [m[2] for m in table if m[1] == target] == [fstype], (target, mounts)
        assert [m[0] for m in table if m[1] == "/userdata"] == ["/dev/vda3"], mounts
        assert [m[0] for m in table if m[1] == "/run/bankboot/banks"] == ["/dev/vda2"], mounts
        rc, out = vm.console.run("readlink /proc/1/exe; tr '\\0' ' ' < /proc/1/cmdline; echo")
        exe, argv0 = out.split()
        assert exe == "/bin/busybox" and argv0 in ("init", "/sbin/init")  # busybox init rewrites its argv[0]
        rc, out = vm.console.run("ls -d /init /bankboot /etc/bankboot/initramfs.conf 2>&1; "
                                 "test -b /dev/vda && test -b /dev/vda2")
        assert rc == 0 and out.count("No such file") == 3, out
        rc, env = vm.console.run("cat /proc/1/environ | tr '\\0' '\\n'")
        assert "LD_LIBRARY_PATH" not in env and "_PYI" not in env


def test_files_survive_a_reboot_in_root_and_userdata(disk, test_dir: Path) -> None:
    board, path = disk.board, disk.path
    with boot(board, path, test_dir / "bootflow" / "persist", reboot=True) as vm:
        vm.console.expect(READY, BOOT_TIMEOUT)
        vm.console.expect(PROMPT, 30)
        rc, _ = vm.console.run("echo in-root > /persist-root.txt && echo in-userdata > /userdata/persist.txt")
        assert rc == 0
        vm.console.sendline("reboot")
        vm.console.expect(r"Booting Linux", BOOT_TIMEOUT)
        vm.console.expect(READY, BOOT_TIMEOUT)
        vm.console.expect(PROMPT, 30)
        rc, out = vm.console.run("cat /persist-root.txt /userdata/persist.txt")
        assert rc == 0 and out.split() == ["in-root", "in-userdata"]


def test_a_corrupt_squashfs_and_nothing_else_gives_the_rescue_shell_naming_the_file(disk, test_dir: Path) -> None:
    board, path, manifest = disk.board, disk.path, disk.manifest
    broken = test_dir / "bootflow" / "corrupt.img"
    shutil.copyfile(path, broken)
    sq = f"/run/bankboot/banks/overlay/{manifest['id']}/rootfs.squashfs"
    with boot(board, broken, test_dir / "bootflow" / "corrupt", reboot=True) as vm:
        vm.console.expect(READY, BOOT_TIMEOUT)
        vm.console.expect(PROMPT, 30)
        # Damage the superblock from inside the running system, as a bad write would.
        rc, _ = vm.console.run(f"printf 'XXXX' | dd of={sq} bs=1 count=4 conv=notrunc && sync")
        assert rc == 0
        vm.console.sendline("reboot -f")
        vm.console.expect(r"Booting Linux", BOOT_TIMEOUT)
        m = vm.console.expect(r"ERROR: .*rootfs\.squashfs.*", BOOT_TIMEOUT)
        assert f"overlay/{manifest['id']}/rootfs.squashfs" in m.group(0).decode()
        vm.console.expect(r"rescue\) / # ", 30)
        rc, out = vm.console.run("readlink /proc/1/exe")
        assert out.strip() == "/init"
    assert not re.search("Kernel panic", vm.console.text())


def test_nothing_bootable_on_a_field_board_reboots_instead_of_a_shell(disk, test_dir: Path) -> None:
    """bankboot.rescue=reboot (what field boards default to): every candidate and its failure is printed,
    then the board reboots to try again; with -no-reboot QEMU exits, so no shell was ever started."""
    board, path, manifest = disk.board, disk.path, disk.manifest
    broken = test_dir / "bootflow" / "nothing.img"
    shutil.copyfile(path, broken)
    with boot(board, broken, test_dir / "bootflow" / "nothing", reboot=True) as vm:
        vm.console.expect(READY, BOOT_TIMEOUT)
        vm.console.expect(PROMPT, 30)
        sq = f"/run/bankboot/banks/overlay/{manifest['id']}/rootfs.squashfs"
        rc, _ = vm.console.run(f"printf 'XXXX' | dd of={sq} bs=1 count=4 conv=notrunc && sync")
        assert rc == 0
    with boot(board, broken, test_dir / "bootflow" / "nothing-b", append="bankboot.rescue=reboot") as vm:
        tried = rf"tried {re.escape(manifest['id'])} \(current\): cannot boot it: .*not a squashfs"
        vm.console.expect(tried, BOOT_TIMEOUT)
        vm.console.expect(r"rebooting in 10 s to try again", 30)
        assert vm.wait_exit(60) == 0  # the guest rebooted: QEMU (-no-reboot) exited
        assert "rescue) / #" not in vm.console.text()
