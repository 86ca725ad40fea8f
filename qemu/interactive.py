"""`make qemu` / `bankboot qemu`: the guest's serial console on this terminal (or on pipes), QEMU's
own multiplexer keys apply (Ctrl-A x quits, Ctrl-A c the monitor)."""

from __future__ import annotations

import os
from pathlib import Path

from builder.board import Board
from builder.parts import locate_kernel
from qemu.vm import qemu_command


def run_interactive(board: Board, initrd: Path, disks: list[Path], append: str = "") -> int:
    if not initrd.is_file():
        raise FileNotFoundError(f"{initrd} does not exist: run `make initramfs BOARD={board.name}` first")
    cmdline = " ".join(x for x in (board.cmdline, append) if x)
    cmd = qemu_command(board, locate_kernel(board).image, initrd, cmdline, disks,
                       ["-chardev", "stdio,id=ser0,mux=on,signal=off", "-serial", "chardev:ser0",
                        "-mon", "chardev=ser0,mode=readline"])
    print(f"booting {board.name} (Ctrl-A x quits)", flush=True)
    os.execvp(cmd[0], cmd)
