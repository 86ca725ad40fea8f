"""The hawkBit lab (builder/lab/hawkbitlab.py, also `make hawkbit-lab`): two qemu-aarch64 devices poll a real
goosebit on the host with `bankctl poll --hawkbit`. A .swu of 1.1.0 is rolled out; one device stages the bank
out of it by range, boots its trial, commits, and goosebit's API shows its action closed with success; the
hardware variant's trial fails its self-test, it is back on 1.0.0 in the same boot, and the image that came
back reports closed failure with the self-test's reason. Each device's own `bankctl status --json` (asked on
its console) agrees with what the server recorded.

One QEMU job (two guests at once): run it under qrun."""

from __future__ import annotations

import pytest

from builder.lab.fleetlab import check_reason
from builder.lab.hawkbitlab import Lab, describe, run_lab

pytestmark = pytest.mark.vm
VARIANTS = (1,)


def test_a_rollout_from_goosebit_and_one_variant_falls_back(aarch64, test_dir, built_initramfs, signing_key) -> None:
    board = aarch64.board
    lab = Lab(board, test_dir / "hawkbit", built_initramfs(board), signing_key.private, 2, VARIANTS)
    result = run_lab(lab)
    print("\n" + describe(result, VARIANTS))
    image = result["image"]
    assert len({s["device_id"] for s in result["statuses"]}) == 2
    for i, st in enumerate(result["statuses"]):
        d, log = result["devices"][st["device_id"]], result["logs"][st["device_id"]]
        booted = next(img for img in st["images"] if img["id"] == st["booted"]["image"])
        states = {img["version"]: img["state"] for img in st["images"]}
        hb = st["hawkbit"]
        assert hb["action"]["image"] == image and hb["action"]["reported"] is True, hb
        assert f"downloaded and verified {image}" in log, log
        assert d["hardware"]["model"] == board.name, d
        if i in VARIANTS:
            assert booted["version"] == "1.0.0" and states["1.1.0"] == "bad", st
            assert (d["last_state"], d["sw_version"]) == ("Error", "1.0.0"), d
            assert hb["action"]["report"] == "failure" and check_reason(hb["action"]["reason"]), hb
            assert f"the trial of {image} (1.1.0) failed: " in log and check_reason(log), log
        else:
            assert booted["version"] == "1.1.0" and states["1.1.0"] == "good", st
            assert (d["last_state"], d["sw_version"], d["progress"]) == ("Finished", "1.1.0", 100), d
            assert hb["action"]["report"] == "success" and f"booted {image} (1.1.0) on trial; it committed" in log, log
    rollout = result["rollouts"]["rollouts"][0]
    assert (rollout["success_count"], rollout["failure_count"]) == (1, 1), rollout
