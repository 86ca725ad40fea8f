"""The fleet simulation (builder/lab/fleetsim.py; `bankboot fleet-sim` runs bigger fleets): hundreds of pollers
with bankctl's own code against a channel on nginx and on SeaweedFS's S3 gateway. An idle fleet costs one
short conditional request per device and poll, whatever its size; an update costs each device the same
few requests and the changed chunks only."""

from __future__ import annotations

import pytest

from builder.lab.fleetsim import Fleet, on_nginx, on_s3, table
from builder.lab.s3store import ACCESS, SECRET, SeaweedS3


@pytest.fixture(scope="module")
def fleet(test_dir) -> Fleet:
    return Fleet(test_dir / "fleet-sim")


def check(rounds: list[dict], bank_size: int) -> None:
    first, idle, update, after = rounds
    assert first["actions"] == ["nothing"] and first["requests_per_device"] == 1
    for r in (idle, after):
        assert r["actions"] == ["nothing"] and r["requests_per_device"] == 1 and r["max_bytes"] < 400, r
    assert update["actions"] == ["staged"] and update["requests_per_device"] <= 6, update
    assert update["max_bytes"] < 0.1 * bank_size, update  # the changed chunks, not the bank


def test_an_idle_fleet_stays_flat_and_an_update_costs_each_device_the_delta(fleet: Fleet, test_dir, monkeypatch):
    size = fleet.banks["1.1.0"].stat().st_size
    results = on_nginx(fleet, [50, 200], workers=8)
    with SeaweedS3() as s3:
        s3.public_bucket("fleet")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        results.update(on_s3(fleet, [50], f"http://127.0.0.1:{s3.port}", "fleet", workers=8))
    (test_dir / "fleet-sim.md").write_text(table(results) + "\n")
    print("\n" + table(results))
    for rounds in results.values():
        check(rounds, size)
    small, big = results["nginx/50"], results["nginx/200"]
    for i in range(4):  # per device, a fleet four times as big costs the same
        assert small[i]["bytes_per_device"] == pytest.approx(big[i]["bytes_per_device"], rel=0.02), (small[i], big[i])
    assert results["s3/50"][1]["bytes_per_device"] < 600
