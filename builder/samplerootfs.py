"""The sample root filesystem for demos and tests: Debian's static busybox with busybox init. Its init
mounts nothing that was handed over (it only adds /dev/pts and /tmp), reports what it sees on the
console, marks its own boot in /run, and gives a shell."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builder.arch import Arch
from builder.initramfs import runner_for
from builder.parts import busybox_links, locate_busybox

INITTAB = """\
::sysinit:/etc/init.d/rcS
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
"""

RCS = """\
#!/bin/sh
# Sample image start-up: report what the initramfs handed over, mount only what it did not.
mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }
echo "sample-rootfs: up, version $(cat /etc/sample-version), pid 1 is $(readlink /proc/1/exe)"
for m in /proc /sys /dev /run; do mounted $m || echo "sample-rootfs: $m was NOT handed over"; done
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mounted /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
echo "sample-rootfs: root is $(awk '$2 == "/" {print $1, $3}' /proc/mounts)"
echo "sample-rootfs: ready"
"""

PROFILE = """\
export PS1='(sample) \\w # '
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
"""


def build_sample_rootfs(arch: Arch, dest: Path, version: str = "1.0.0") -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "proc", "sys", "dev", "run", "tmp",
              "root", "userdata", "mnt", "var"]:
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    busybox = locate_busybox(arch)
    shutil.copy2(busybox, dest / "bin/busybox")
    for rel, target in busybox_links(busybox, runner_for(arch)):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, dest / rel)
    (dest / "etc/inittab").write_text(INITTAB)
    (dest / "etc/init.d/rcS").write_text(RCS)
    os.chmod(dest / "etc/init.d/rcS", 0o755)
    (dest / "etc/profile").write_text(PROFILE)
    (dest / "etc/sample-version").write_text(version + "\n")
    (dest / "etc/hostname").write_text("sample\n")
    return dest
