"""A sealed image's persistent state, written offline by someone holding the SD card (qemu-aarch64): links
planted in place of the directories the init mounts or cleans must never be followed (each is replaced by
an empty directory and reported), and what is planted inside a persistent path (a setuid-root program, a
device node for the disk) must not work there. The guest reports what it got."""

from __future__ import annotations

import json

import pytest

from builder import bankspart
from builder.lab import faultdisk
from builder.parts import locate_busybox
from tests.vm.devices import Device, current_of, sh, up

pytestmark = pytest.mark.vm
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
# Busybox honours a setuid bit on itself for the applets its /etc/busybox.conf (root's, not writable by
# others) lists: `id` then runs with euid 0 for anyone, as any setuid-root program would.
SUID_CONF = "[SUID]\nid = ssx root.0\n"
VDA = (254, 0)  # virtio_blk's major on qemu-aarch64 (the first dynamic block major), checked in the guest


def test_planted_links_setuid_programs_and_device_nodes_in_persistent_state(device) -> None:
    d = Device(device, "sealed-state", None)
    cur = current_of(d.disk)
    up_, wk = f"overlay/{cur}/upper", f"overlay/{cur}/work"
    busybox = locate_busybox(device.board.arch).read_bytes()
    with bankspart.banks_partition(d.disk) as part:
        faultdisk.plant_file(part, "decoy-var/planted", b"DECOY\n", 0o644)  # another directory of the partition
        faultdisk.plant_file(part, "decoy-utils/bankboot-keep/file", b"keep\n", 0o644)
        faultdisk.plant_file(part, f"{up_}/etc/busybox", busybox, 0o4755)
        faultdisk.plant_file(part, f"{up_}/etc/busybox.conf", SUID_CONF.encode(), 0o600)
        faultdisk.plant_file(part, f"{up_}/etc/passwd", PASSWD.encode(), 0o644)
        bankspart.debugfs(
            part, "mkdir decoy-work", f"mkdir {wk}",
            f"symlink {up_}/var ../../../decoy-var",  # relative: another directory of the partition
            f"symlink {up_}/root /run/bankboot/banks",  # absolute: the init's view of the whole partition
            f"symlink {wk}/etc /run/bankboot/banks/decoy-work",
            f"rmdir overlay/{cur}/utils", f"symlink overlay/{cur}/utils /run/bankboot/banks/decoy-utils",
            "symlink userdata overlay",  # bankboot.userdata=banks would bind the images at /userdata
            f"cd {up_}/etc", f"mknod vda b {VDA[0]} {VDA[1]}", "cd /", f"sif {up_}/etc/vda mode 060666")
    with d.vm(append="bankboot.timeout=0 bankboot.userdata=banks") as vm:
        assert up(vm) == "1.0.0"
        banks = "/run/bankboot/banks"
        dirs = ["/var", "/root", "/userdata", f"{banks}/decoy-var", f"{banks}/decoy-work", f"{banks}/decoy-utils"]
        rc, out = sh(vm, "echo x > /var/new && echo y > /root/new && sync && " + "; echo @@; ".join(f"ls -A {p}"
                                                                                                for p in dirs))
        var, root, userdata, decoy_var, decoy_work, decoy_utils = (x.split() for x in out.split("@@"))
        assert var == ["new"] and root == ["new"] and userdata == [], out  # not the decoy, not the partition
        assert decoy_var == ["planted"] and decoy_work == [] and decoy_utils == ["bankboot-keep"], out
        for path in (f"{up_}/var", f"{up_}/root", f"{wk}/etc", f"overlay/{cur}/utils", "userdata"):
            rc, out = sh(vm, f"test -d {banks}/{path} && ! test -L {banks}/{path} && echo real")
            assert out.strip() == "real", path
        rc, out = sh(vm, f"cat {banks}/{up_}/var/new {banks}/{up_}/root/new")  # the writes went to the image's upper
        assert out.split() == ["x", "y"], out
        # Inside a persistent path: nosuid,nodev, which the kernel enforces.
        rc, out = sh(vm, "grep -E ' /(etc|var|root) ' /proc/mounts")
        assert len(out.splitlines()) == 3 and all("nosuid" in m and "nodev" in m for m in out.splitlines()), out
        rc, out = sh(vm, "stat -c '%t %T' /dev/vda; head -c 4 /etc/vda >/dev/null && echo READ-THE-DISK")
        assert out.splitlines()[0] == f"{VDA[0]:x} {VDA[1]:x}" and "READ-THE-DISK" not in out, out
        assert "Permission denied" in out, out
        rc, out = sh(vm, "su -s /bin/sh nobody -c '/etc/busybox id'")
        assert rc == 0 and "uid=65534" in out and "euid=0" not in out, out
        assert f"{up_}/var was a symlink to ../../../decoy-var: replaced by an empty directory" in vm.console.text()
        rc, log = sh(vm, "bankctl log --json")
        notes = json.loads(log)[0]["notes"]
        for path in (f"{up_}/var", f"{up_}/root", f"{wk}/etc", f"overlay/{cur}/utils", "userdata"):
            assert f"{path} was a symlink" in notes, (path, notes)
