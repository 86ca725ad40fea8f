"""How the fault campaign's slices are dealt (builder/lab/faults.py), without QEMU: each board gets a power cut and
disk classes of its own, none needs a prepared device, and the seed decides."""

from __future__ import annotations

from builder.lab.faults import DISK_CLASSES, NEEDS_PREVIOUS, SLICE_BOARDS, SLICE_CUTS, disks_for, slice_plans


def test_each_board_gets_its_own_classes_and_none_needs_a_prepared_device() -> None:
    for seed in range(50):
        plans = slice_plans(seed)
        assert set(plans) == set(SLICE_BOARDS)
        disks = [f for plan in plans.values() for kind, f in plan if kind == "disk"]
        assert len(disks) == len(set(disks)) == sum(SLICE_BOARDS.values())
        assert not set(disks) & set(NEEDS_PREVIOUS)
        cuts = [f for plan in plans.values() for kind, f in plan if kind == "cut"]
        assert set(cuts) == set(SLICE_CUTS)  # every fresh-disk cut class runs in every make test
        for plan in plans.values():
            assert disks_for(plan) <= {"big"}  # a stage's image at most: no boot before the first injection


def test_the_seed_decides_and_over_seeds_every_class_runs_on_every_board() -> None:
    assert slice_plans(7) == slice_plans(7) and slice_plans(7) != slice_plans(8)
    seen: dict[str, set[str]] = {}
    for seed in range(400):
        for board, plan in slice_plans(seed).items():
            seen.setdefault(board, set()).update(f for _, f in plan)
    for board in SLICE_BOARDS:
        assert seen[board] >= set(SLICE_CUTS) | (set(DISK_CLASSES) - set(NEEDS_PREVIOUS))


def test_the_full_campaign_prepares_what_its_classes_start_from() -> None:
    assert disks_for([("cut", "mark-good")]) == {"committed", "trial"}
    assert disks_for([("cut", "gc")]) == {"committed", "gc", "big"}
    assert disks_for([("disk", "squashfs-middle")]) == {"committed"}
    assert disks_for([("cut", "stage"), ("disk", "full")]) == {"big"}


def test_the_loader_classes_run_where_a_loader_can_be_installed(tmp_path) -> None:
    from builder.board import load_board
    from builder.lab.faults import loader_classes_absent

    assert loader_classes_absent(load_board("qemu-aarch64")) == ""
    assert loader_classes_absent(load_board("qemu-x86_64")) == ""
    assert "direct" in loader_classes_absent(load_board("raspberrypi3"))
    assert "cannot carry a kernel" in loader_classes_absent(load_board("qemu-armv7"))


def test_userdata_has_room_for_updates_put_there(tmp_path) -> None:
    from builder.lab.faults import userdata_room

    big = tmp_path / "big.bank"
    big.write_bytes(b"\0" * (70 << 20))
    assert userdata_room([]) == 64 << 20
    assert userdata_room([big]) >= (64 << 20) + big.stat().st_size
