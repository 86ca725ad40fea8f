"""The sample root filesystem for demos and tests: Debian's static busybox with busybox init. Its init
mounts nothing that was handed over (it only adds /dev/pts and /tmp), reports what it sees on the
console, marks its own boot in /run, and gives a shell."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builder.arch import Arch
from builder.kmod import ModuleError, module_closure, run_depmod
from builder.parts import KernelParts, busybox_links, locate_busybox
from builder.pollservice import INIT_SCRIPT
from builder.run import target_runner
from overlay_layout.contract import BIN, BOOTED, SELFTEST_DIR, archive_path

INITTAB = """\
::sysinit:/etc/init.d/rcS
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
"""

RCS = f"""\
#!/bin/sh
# Sample image start-up: report what the initramfs handed over, mount only what it did not.
# First, a mark in the kernel log (its timestamp is when this image's init got going: `make bench` reads it).
echo "<7>sample-rootfs: init running" >/dev/kmsg 2>/dev/null
mounted() {{ grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }}
echo "sample-rootfs: up, version $(cat /etc/sample-version), pid 1 is $(readlink /proc/1/exe)"
for m in /proc /sys /dev /run; do mounted $m || echo "sample-rootfs: $m was NOT handed over"; done
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mounted /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
echo "sample-rootfs: root is $(awk '$2 == "/" {{print $1, $3}}' /proc/mounts)"
# A NIC (QEMU's user-mode network in tests): its fixed addresses there; a real image runs its own network.
if [ -e /sys/class/net/eth0 ]; then
  ip link set lo up
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 &&
    echo "sample-rootfs: network up on eth0"
fi
# On a trial boot, commit once our own checks pass (a real image would do this from a health service).
if grep -qE '"trial": ?true' {BOOTED} 2>/dev/null; then  # spaced as json.dumps writes it, or compact
  if [ -e /etc/sample-no-mark-good ]; then
    echo "sample-rootfs: trial boot; this image never marks itself good"
  elif [ -x {BIN}/bankctl ] && {BIN}/bankctl mark-good; then
    echo "sample-rootfs: trial boot; marked good"
  else
    echo "sample-rootfs: trial boot; mark-good FAILED"
  fi
fi
# Tell bankboot this boot came up (the image is built with --confirm-boots: boots without it count).
if [ -e /etc/sample-no-boot-ok ]; then
  echo "sample-rootfs: this image never confirms its boots"
elif [ -x {BIN}/bankctl ] && {BIN}/bankctl boot-ok >/dev/null; then
  echo "sample-rootfs: boot confirmed"
else
  echo "sample-rootfs: boot-ok FAILED"
fi
# The device's identity (bankctl poll sends an id derived from it): made once, kept in the persistent /etc.
[ -s /etc/machine-id ] || tr -d - </proc/sys/kernel/random/uuid >/etc/machine-id
# The channel poller, when the image names a channel (/etc/bankboot/poll.conf, builder/pollservice.py).
[ -x {INIT_SCRIPT} ] && {INIT_SCRIPT} start
echo "sample-rootfs: ready"
"""

# The sample image's persistence policy (bankboot image --persist): its configuration, state and root's
# home keep changes; everything else is the signed squashfs, reset at every boot.
SAMPLE_PERSIST = ["/etc", "/var", "/root"]

PROFILE = f"""\
export PS1='(sample) \\w # '
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:{BIN}
"""


def build_sample_rootfs(arch: Arch, dest: Path, version: str = "1.0.0", mark_good: bool = True,
                        failing_selftest: bool = False, boot_ok: bool = True, cmdline_selftest: bool = False) -> Path:
    """mark_good=False: a trial of this image never commits itself. failing_selftest: the image ships a
    /etc/bankboot/selftest.d check that fails (the init must fall back before switching to it).
    boot_ok=False: it never runs `bankctl boot-ok` (an image that comes up broken). cmdline_selftest: a check
    that fails on a device whose kernel command line says sample.selftest=fail (a hardware variant the
    release does not work on, for the fleet lab). It starts the channel poller of
    builder/pollservice.install_poll_service when that is installed in it."""
    if dest.exists():
        shutil.rmtree(dest)
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "proc", "sys", "dev", "run", "tmp",
              "root", "userdata", "mnt", "var"]:
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    busybox = locate_busybox(arch)
    shutil.copy2(busybox, dest / "bin/busybox")
    for link, target in busybox_links(busybox, target_runner(arch)):
        (dest / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, dest / link)
    (dest / "etc/inittab").write_text(INITTAB)
    (dest / "etc/init.d/rcS").write_text(RCS)
    os.chmod(dest / "etc/init.d/rcS", 0o755)
    (dest / "etc/profile").write_text(PROFILE)
    (dest / "etc/sample-version").write_text(version + "\n")
    (dest / "etc/hostname").write_text("sample\n")
    checks = dest / archive_path(SELFTEST_DIR)
    checks.mkdir(parents=True)
    ok = checks / "10-sample"
    ok.write_text("#!/bin/sh\n# Runs chrooted in the image before the init switches to it.\ntest -x /bin/busybox\n")
    ok.chmod(0o755)
    if failing_selftest:
        bad = checks / "50-fails"
        # It also leaves a process behind, inside the image: the init must still release the image's mounts.
        bad.write_text("#!/bin/sh\nsleep 600 </dev/null >/dev/null 2>&1 &\n"
                       "echo 'sample self-test: deliberately failing' >&2\nexit 7\n")
        bad.chmod(0o755)
    if cmdline_selftest:
        variant = checks / "20-hardware"
        variant.write_text("#!/bin/sh\n# This release does not work on the variant whose command line says so.\n"
                           "if grep -q 'sample.selftest=fail' /proc/cmdline; then\n"
                           "  echo 'sample self-test: this hardware variant is not supported' >&2; exit 3\nfi\n")
        variant.chmod(0o755)
    if not mark_good:
        (dest / "etc/sample-no-mark-good").write_text("")
    if not boot_ok:
        (dest / "etc/sample-no-boot-ok").write_text("")
    return dest


def add_kernel_modules(rootfs: Path, kernel: KernelParts, names: tuple[str, ...]) -> None:
    """A kernel's modules in the rootfs (the closure of `names` and of the initramfs's on-demand sets, with
    modules.dep), as an image that carries its own kernel must have them (`bankboot image --kernel ...
    --board ...` builds its initramfs from them)."""
    from builder.initramfs import ON_DEMAND_MODULES

    dest = rootfs / "lib/modules" / kernel.version
    wanted = [*names, *(m for mods in ON_DEMAND_MODULES.values() for m in mods)]
    found = []
    for name in wanted:  # what this kernel lacks is reported when its initramfs is built
        try:
            found += module_closure(kernel.modules_dir, [name])
        except ModuleError:
            pass
    for path in dict.fromkeys(found):
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kernel.modules_dir / path, dest / path)
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (kernel.modules_dir / meta).is_file():
            shutil.copyfile(kernel.modules_dir / meta, dest / meta)
    run_depmod(rootfs, kernel.version)
