"""The fleet lab (builder/lab/fleetlab.py, also `make fleet-demo`): three qemu-aarch64 devices follow one channel
on nginx. 1.1.0 is published; each device polls, stages the delta, reboots into its trial and commits;
the hardware variant's trial fails its self-test and falls back, and its next polls say so. What every
device says of itself (`bankctl status --json`, asked on its console) agrees with nginx's log of its
requests: its id, its version, its state and why, and to the byte what its update cost.

One QEMU job (three guests at once): run it under `flock /tmp/qemu.lock`."""

from __future__ import annotations

import pytest

from builder.lab.fleetlab import Lab, check_reason, describe, device_rows, run_lab

pytestmark = pytest.mark.vm
VARIANTS = (2,)


def test_a_release_reaches_a_fleet_and_one_variant_falls_back(aarch64, test_dir, built_initramfs,
                                                              signing_key) -> None:
    board = aarch64.board
    lab = Lab(board, test_dir / "fleet", built_initramfs(board), signing_key.private, 3, VARIANTS)
    result = run_lab(lab)
    print("\n" + describe(result, VARIANTS))
    rows = device_rows(result, VARIANTS)
    image = result["image"]
    assert len({r["id"] for r in rows}) == 3 and all(r["id"] for r in rows)  # three devices, told apart
    for r in rows:
        poll = r["poll"]
        assert r["polls"] >= 3 and r["not_modified"] >= 1, r  # idle polls are 304s
        assert poll["staged"]["image"] == image and poll["offered"]["image"] == image, r
        # what the device counted of its update is what nginx sent it: requests and bytes, heads included
        mine = [x for x in result["log"] if x["device"] == r["id"]]
        first = next(n for n, x in enumerate(mine) if x["uri"].endswith(".bank"))
        update = [mine[first - 1]] + [x for x in mine[first:] if x["uri"].endswith(".bank")]
        assert mine[first - 1]["uri"] == "/stable.json" and mine[first - 1]["status"] == 200, mine
        assert (poll["staged"]["requests"], poll["staged"]["received"]) == (len(update),
                                                                            sum(x["sent"] for x in update)), r
        assert r["bank_bytes"] < 0.5 * result["bank_size"], r  # the changed chunks, once
        if r["variant"]:
            assert r["running"] == "1.0.0" and r["image_state"]["1.1.0"] == "bad" and check_reason(r["reason"]), r
            assert r["last_state"] == "fell-back" and r["last_version"] == "1.0.0", r
            assert r["last_fallback"].startswith(f"{image} 1.1.0: ") and check_reason(r["last_fallback"]), r
            tried = r["tried"][0]  # this boot's record of the image it gave up, and why
            assert tried["image"] == image and r["last_fallback"] == f"{image} 1.1.0: {tried['error']}", r
            assert "it failed on this device" in poll["result"], r
        else:
            assert r["running"] == "1.1.0" and r["image_state"]["1.1.0"] == "good", r
            assert (r["last_state"], r["last_version"], r["last_fallback"]) == ("committed", "1.1.0", ""), r
            assert poll["result"].startswith("up to date: 1.1.0"), r
