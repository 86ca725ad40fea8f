"""The QEMU command line a board gets: the instruction clock's flags and disks that ignore flushes there."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.board import load_board
from builder.lab.boot import machine_for
from qemu.machine import ICOUNT, qemu_command


@pytest.mark.parametrize("board", ["qemu-aarch64", "qemu-x86_64", "qemu-armv7", "raspberrypi3"])
def test_the_instruction_clock_ignores_flushes_and_the_host_clock_keeps_them(board: str) -> None:
    machine = machine_for(load_board(board))
    disks = [Path("/tmp/a.img"), Path("/tmp/b.img")]
    timed = qemu_command(machine, Path("k"), Path("i"), "", disks, [], clock="icount")
    drives = [timed[i + 1] for i, a in enumerate(timed) if a == "-drive"]
    assert len(drives) == 2 and all(d.endswith(",cache.no-flush=on") for d in drives), drives
    assert " ".join(ICOUNT) in " ".join(timed)
    plain = qemu_command(machine, Path("k"), Path("i"), "", disks, [], clock="host")
    assert not [a for a in plain if "no-flush" in a]  # power cuts and every test keep real flushes
