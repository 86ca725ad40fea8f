"""A QEMU machine as plain data, and the command line that boots a kernel and initramfs on it. What a
board means for QEMU is worked out by the builder (builder/lab/boot.py); this side takes only the result."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    name: str  # for messages: the board's name
    system: str  # qemu-system-* binary
    args: tuple[str, ...]  # machine, CPU, memory, devices
    disk: tuple[str, ...]  # arguments that attach a disk: {path} and {index} are filled in
    guest_machine: str  # `uname -m` of the guest (KVM only when the host is the same)
    serial_index: int = 0  # which -serial is the console; the ones before it go nowhere
    dtb: Path | None = None  # a device tree to pass with -dtb
    net: tuple[str, ...] = ()  # a NIC on QEMU's user-mode network, netdev "net0" (the host is 10.0.2.2)

    def disk_args(self, path: Path, index: int, no_flush: bool = False) -> list[str]:
        """no_flush: the host never syncs the image when the guest flushes (cache.no-flush), for measuring."""
        args = [a.format(path=path, index=index) for a in self.disk]
        if no_flush:
            args = [f"{a},cache.no-flush=on" if i and args[i - 1] == "-drive" else a for i, a in enumerate(args)]
        return args


def kvm_usable() -> bool:
    """KVM only where the CPU advertises vmx/svm: the /dev/kvm here cannot run stock kernels."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return os.access("/dev/kvm", os.R_OK | os.W_OK) and (" vmx" in flags or " svm" in flags)


# QEMU's instruction clock: the guest's clock advances 1 ns per executed guest instruction (a 1-GIPS in-order
# CPU) and idle time passes at real speed, so boot timestamps repeat to the millisecond whatever the host's
# load and whatever TCG's translation costs (which no real board pays). It does not model caches, memory
# stalls or a real storage device's latency. `make bench` measures on it. Its disks ignore the guest's
# flushes: a flush would wait for the host's own disk (tens of milliseconds under load, at real speed),
# which is neither the boot's work nor a board's storage; the bench counts the flushes instead.
ICOUNT = ("-accel", "tcg,thread=single", "-icount", "shift=0,sleep=on,align=off")
CLOCKS = ("host", "icount")


def _without_accel(args: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "-accel":
            skip = True
        else:
            out.append(a)
    return out


def qemu_command(machine: Machine, kernel: Path | None, initrd: Path | None, cmdline: str, disks: list[Path],
                 serial: list[str], qmp: str | None = None, net: bool = False, clock: str = "host",
                 firmware: list[str] | None = None) -> list[str]:
    """clock: "host" (KVM where usable, else TCG at full speed) or "icount" (ICOUNT, for measuring).
    firmware: arguments that start a firmware (-bios, pflash) which loads the kernel from the disks itself;
    then kernel and initrd are None and the device tree is QEMU's own."""
    binary = shutil.which(machine.system)
    if binary is None:
        raise RuntimeError(f"{machine.system} is not installed (make deps installs it)")
    if clock not in CLOCKS:
        raise ValueError(f"clock {clock!r} is not one of {', '.join(CLOCKS)}")
    if clock == "icount":
        cmd = [binary, *_without_accel(machine.args), *ICOUNT]
    else:
        cmd = [binary, *machine.args]
        if "-accel" not in machine.args:
            cmd += ["-accel", "kvm" if kvm_usable() and machine.guest_machine == os.uname().machine else "tcg"]
    cmd += ["-display", "none", "-nodefaults", "-no-user-config"]
    if firmware:
        cmd += firmware
    else:
        if kernel is None or initrd is None:
            raise ValueError("a boot without firmware needs a kernel and an initramfs")
        if machine.dtb is not None:
            cmd += ["-dtb", str(machine.dtb)]
        cmd += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline]
    cmd += [*["-serial", "null"] * machine.serial_index, *serial]
    if qmp:
        cmd += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    for i, disk in enumerate(disks):
        cmd += machine.disk_args(disk, i, no_flush=clock == "icount")
    if net:
        if not machine.net:
            raise RuntimeError(f"{machine.name} has no network device for QEMU (qemu.net in its board file)")
        cmd += machine.net
    return cmd
