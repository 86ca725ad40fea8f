"""`bankboot bench --only firmware`: what booting through the board's real firmware costs against QEMU's
`-kernel` (direct), on the instruction clock, for the same image, kernel and initramfs on disks that differ only
in what `bankboot disk --firmware` wrote.

The guest's kernel clock starts when the kernel does, so it cannot see the firmware. QEMU's own count of executed
guest instructions (QMP `query-replay`, kept whenever -icount is on) can: read once the image's shell is idle at
its prompt, it is every instruction from QEMU's start (firmware, loader script, the CRC checks, the kernel, the
init) and, at 1 ns per instruction, the virtual time the boot worked. Idle waits are not in it (they pass at real
speed on this clock). Each figure repeats to within a few thousand instructions: one boot per firmware is enough."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from builder.board import Board, BoardError, load_board
from builder.lab.bench import BOOT_TIMEOUT, KMSG, PROMPT, BenchError, read_marks


def boards_to_compare(board: Board) -> list[tuple[Board, str]]:
    """direct and the board's own firmware; for a board with a `<name>-uefi` sibling (qemu-aarch64), UEFI on
    that board too (its file adds the RNG device UEFI needs to seed the kernel)."""
    rows = [(board, "direct")]
    if board.firmware != "direct":
        rows.append((board, board.firmware))
    if board.firmware != "uefi":
        try:
            rows.append((load_board(board.name + "-uefi"), "uefi"))
        except BoardError:
            pass
    return rows


def time_firmware_boot(board: Board, firmware: str, bank: Path, initrd: Path, out: Path) -> dict[str, float]:
    """One boot of a fresh disk for `firmware` on the instruction clock: guest instructions from QEMU's start to
    the image's idle shell (seconds at 1 ns each), the kernel clock at the image's init, the wall clock."""
    from builder.disk import build_disk
    from builder.lab.boot import disk_vm

    log = out / f"firmware-{board.name}-{firmware}"
    shutil.rmtree(log, ignore_errors=True)
    disk = out / f"disk-{board.name}-{firmware}.img"
    build_disk(board, bank, disk, 512 << 20, initrd, boot_size=None, firmware=firmware,
               extra_cmdline=KMSG)
    with disk_vm(board, disk, log, clock="icount", reboot=True) as vm:
        vm.console.expect(r"sample-rootfs: up", BOOT_TIMEOUT)
        wall = time.monotonic() - vm.started_at
        vm.console.expect(PROMPT, BOOT_TIMEOUT)
        instructions = int(vm.qmp.cmd("query-replay")["icount"])  # type: ignore[index]
        rc, dmesg = vm.console.run("dmesg", timeout=120)
        if rc != 0:
            raise BenchError(f"bench: dmesg failed in the guest:\n{dmesg}")
    marks = read_marks(dmesg, "frozen")
    return {"instructions to the shell": instructions / 1e9, "kernel clock: image init": marks["image init"],
            "wall: QEMU start -> up": wall}


def bench_firmware(board: Board, bank: Path, policy, out: Path, say=print) -> list[tuple[str, dict[str, float]]]:
    """Each firmware of boards_to_compare, with its row printed as it comes; the first row is direct."""
    from builder.initramfs import build_initramfs

    rows = []
    for b, firmware in boards_to_compare(board):
        initrd = build_initramfs(b, out / f"initramfs-{b.name}.img", policy=policy).path
        got = time_firmware_boot(b, firmware, bank, initrd, out)
        rows.append((f"{b.name} {firmware}", got))
    labels = list(rows[0][1])
    say(f"\nfirmware (one boot each, seconds; instructions at 1 ns each)\n{'':<24}"
        + "".join(f"{label:>28}" for label in labels) + f"{'firmware cost vs direct':>28}")
    for name, got in rows:
        cost = got[labels[0]] - rows[0][1][labels[0]]
        say(f"{name:<24}" + "".join(f"{got[label]:>28.3f}" for label in labels) + f"{cost:>28.3f}")
    return rows
