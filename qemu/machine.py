"""A QEMU machine as plain data, and the command line that boots a kernel and initramfs on it. What a
board means for QEMU is worked out by the builder (builder/boot.py); this side takes only the result."""

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

    def disk_args(self, path: Path, index: int) -> list[str]:
        return [a.format(path=path, index=index) for a in self.disk]


def kvm_usable() -> bool:
    """KVM only where the CPU advertises vmx/svm: the /dev/kvm here cannot run stock kernels."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return os.access("/dev/kvm", os.R_OK | os.W_OK) and (" vmx" in flags or " svm" in flags)


def qemu_command(machine: Machine, kernel: Path, initrd: Path, cmdline: str, disks: list[Path],
                 serial: list[str], qmp: str | None = None, net: bool = False) -> list[str]:
    binary = shutil.which(machine.system)
    if binary is None:
        raise RuntimeError(f"{machine.system} is not installed (make deps installs it)")
    cmd = [binary, *machine.args]
    if "-accel" not in machine.args:
        cmd += ["-accel", "kvm" if kvm_usable() and machine.guest_machine == os.uname().machine else "tcg"]
    if machine.dtb is not None:
        cmd += ["-dtb", str(machine.dtb)]
    cmd += ["-display", "none", "-nodefaults", "-no-user-config", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", cmdline, *["-serial", "null"] * machine.serial_index, *serial]
    if qmp:
        cmd += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    for i, disk in enumerate(disks):
        cmd += machine.disk_args(disk, i)
    if net:
        if not machine.net:
            raise RuntimeError(f"{machine.name} has no network device for QEMU (qemu.net in its board file)")
        cmd += machine.net
    return cmd
