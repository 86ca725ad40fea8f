"""`make qemu` / `bankboot qemu`: the guest's serial console on this terminal (or on pipes), QEMU's
own multiplexer keys apply (Ctrl-A x quits, Ctrl-A c the monitor)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from builder.board import Board
from builder.parts import locate_kernel
from qemu.vm import qemu_command


def run_interactive(board: Board, initrd: Path, disks: list[Path], append: str = "", from_disk: bool = True) -> int:
    """With a disk and from_disk, boot it as firmware would: kernel, initramfs and cmdline.txt from its
    boot partition. The serial console is this process's stdin/stdout, terminal or pipe."""
    kernel = locate_kernel(board).image
    if disks and from_disk:
        from builder.disk import read_boot_files

        tmp = Path(tempfile.mkdtemp(prefix="bankboot-boot-"))
        kernel, initrd, cmdline = read_boot_files(disks[0], tmp, board.kernel_name)
        cmdline = " ".join(x for x in (cmdline, append) if x)
    else:
        if not initrd.is_file():
            raise FileNotFoundError(f"{initrd} does not exist: run `make initramfs BOARD={board.name}` first")
        cmdline = " ".join(x for x in (board.cmdline, append) if x)
    cmd = qemu_command(board, kernel, initrd, cmdline, disks,
                       ["-chardev", "stdio,id=ser0,mux=on,signal=off", "-serial", "chardev:ser0",
                        "-mon", "chardev=ser0,mode=readline"])
    print(f"booting {board.name} (Ctrl-A x quits)", flush=True)
    os.execvp(cmd[0], cmd)
