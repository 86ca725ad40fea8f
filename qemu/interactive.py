"""`make qemu` / `bankboot qemu`: the guest's serial console on this terminal (or on pipes), QEMU's
own multiplexer keys apply (Ctrl-A x quits, Ctrl-A c the monitor)."""

from __future__ import annotations

import os
from pathlib import Path

from qemu.machine import Machine, qemu_command


def exec_console(machine: Machine, kernel: Path | None, initrd: Path | None, cmdline: str, disks: list[Path],
                 net: bool = False, firmware: list[str] | None = None) -> int:
    """Replace this process by QEMU with the serial console on stdin/stdout, terminal or pipe."""
    cmd = qemu_command(machine, kernel, initrd, cmdline, disks,
                       ["-chardev", "stdio,id=ser0,mux=on,signal=off", "-serial", "chardev:ser0",
                        "-mon", "chardev=ser0,mode=readline"], net=net, firmware=firmware)
    print(f"booting {machine.name} (Ctrl-A x quits)", flush=True)
    os.execvp(cmd[0], cmd)
