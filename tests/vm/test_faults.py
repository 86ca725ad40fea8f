"""The slices of the never-brick campaign that run in `make test`, one per board and each through the board's
own firmware (U-Boot on qemu-aarch64 and qemu-armv7, OVMF + systemd-boot on qemu-x86_64, direct on the Pi): a
real power cut (QEMU killed at a random instant) during a stage, the init's boot or a reset, and disk faults,
each followed by boots until the image reports it is up; what runs and whether /userdata survived are asked of
the guest. The classes are dealt across the boards from the seed (builder.lab.faults.slice_plans), so every run
covers each board and, over runs, every class on every board; `make faults BOARD=...` runs a board's full
campaign. The loader classes have their own slice (tests/vm/test_firmware.py). BANKBOOT_FAULT_SEED=N repeats a
run (the seed is printed)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from builder.lab.faults import SLICE_BOARDS, format_table, run_campaign, slice_plans
from tests.fixtures import board_parts

pytestmark = pytest.mark.vm
SEED = int(os.environ.get("BANKBOOT_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))


@pytest.mark.parametrize("board_name", list(SLICE_BOARDS))
def test_every_fault_ends_on_a_good_signed_image(board_name: str, test_dir: Path, built_initramfs,
                                                signing_key) -> None:
    board = board_parts(board_name).board
    plan = slice_plans(SEED)[board_name]
    print(f"fault slice seed {SEED} (BANKBOOT_FAULT_SEED={SEED} repeats it) on {board_name}: {plan}")
    report = run_campaign(board, test_dir / "faults" / board_name, SEED, 0, (), plan_override=plan, need=(),
                          big_mb=16, signed=(built_initramfs(board), signing_key.private))
    assert report["injections"] == len(plan)
    failed = [o for o in report["outcomes"] if not o["recovered"]]
    assert not failed, f"seed {SEED}:\n{format_table(report)}\n" + "\n".join(
        f"{o['fault']} ({o['detail']}): {o['error']}" for o in failed)
    assert report["bytes_lost"] == 0
