"""The slice of the never-brick campaign that runs in `make test`: real power cuts (QEMU killed at random
instants) during stage, mark-good, boot, reset and gc, and every disk-fault class, each followed by boots
until the image reports it is up; what runs and whether /userdata survived are asked of the guest.
`make faults` runs the full campaign. BANKBOOT_FAULT_SEED=N repeats a run (the seed is printed)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from builder.faults import DISK_CLASSES, format_table, run_campaign

pytestmark = pytest.mark.vm
SLICE_CUTS = 10


def test_every_fault_ends_on_a_good_signed_image(aarch64, test_dir: Path) -> None:
    board = aarch64.board
    seed = int(os.environ.get("BANKBOOT_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"fault campaign seed {seed} (BANKBOOT_FAULT_SEED={seed} repeats it)")
    report = run_campaign(board, test_dir / "faults", seed, SLICE_CUTS, DISK_CLASSES)
    assert report["injections"] >= 20
    failed = [o for o in report["outcomes"] if not o["recovered"]]
    assert not failed, f"seed {seed}:\n{format_table(report)}\n" + "\n".join(
        f"{o['fault']} ({o['detail']}): {o['error']}" for o in failed)
    assert report["bytes_lost"] == 0
