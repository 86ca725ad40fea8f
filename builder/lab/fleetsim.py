"""A fleet of pollers on the build host (no VMs): N simulated devices, each a banks partition in a directory
with 1.0.0 committed, each polling a channel with bankctl's own code (initfs/poll.py: the channel document,
its checks, the chunked stage), in a pool of processes, against a channel on nginx (builder/lab/serve.py) or an
S3 store. What each device costs the server per release, and how that grows with the fleet:

    round 1  idle: the first poll of every device (the document whole: 200)
    round 2  idle: every device again (its kept ETag: 304)
    --       1.1.0 is published (a few changed chunks of 1.0.0)
    round 3  update: the document, then the bank's manifest, index and the chunks the device lacks
    --       every device's trial commits (as its boot would)
    round 4  idle again: 304

Devices are hard-linked copies of one template (every write on a banks partition makes a new file:
durable.py), so hundreds of them cost little room. Requests and bytes are bankctl's own count of each
poll (heads included); for nginx they are checked against its access log."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path

from builder.errors import BuildError
from builder.keys import keygen

BOARD = "qemu-aarch64"
MACHINE = "aarch64"
ROUNDS = ("first poll", "idle (ETag)", "update 1.0.0 -> 1.1.0", "idle after the update")


class Fleet:
    """The release key, the two bank files (the sample image, 1.0.0 and 1.1.0: real squashfs images with
    their chunk index) and the device template under `root`."""

    def __init__(self, root: Path) -> None:
        from builder.board import load_board
        from builder.image import build_image
        from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "release.key").exists():
            keygen(root / "release", "fleet simulation")
        self.key = root / "release.key"
        arch = load_board(BOARD).arch
        self.banks = {v: root / f"app-{v}.bank" for v in ("1.0.0", "1.1.0")}
        self.ids = {}
        for version, bank in self.banks.items():
            rootfs = build_sample_rootfs(arch, root / f"rootfs-{version}", version=version)
            (rootfs / "usr/share").mkdir(parents=True, exist_ok=True)
            (rootfs / "usr/share/data").write_bytes(random.Random(5).randbytes(2 << 20))  # what does not change
            self.ids[version] = build_image(rootfs, version, bank, sign_key=self.key, confirm_boots=True,
                                            persist=SAMPLE_PERSIST)["id"]
        self.template = root / "template"
        from overlay_layout.stage import stage
        from overlay_layout.state import Banks

        shutil.rmtree(self.template, ignore_errors=True)
        banks = Banks(str(self.template))
        (self.template / "overlay").mkdir(parents=True)
        m = stage(banks, str(self.banks["1.0.0"]), policy_of(self.key), "9.9.9", machine=MACHINE)
        banks.mark_good(m["id"])
        (self.template / ".lock").unlink(missing_ok=True)

    def devices(self, n: int) -> list[Path]:
        """n fresh devices (hard-linked from the template), each with its own machine id."""
        out = self.root / f"devices-{n}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        paths = []
        for i in range(n):
            d = out / f"dev{i:04d}"
            subprocess.run(["cp", "-al", str(self.template), str(d)], check=True)
            (d / "etc").mkdir()
            (d / "etc/machine-id").write_text(hashlib.sha256(f"{n}-{i}".encode()).hexdigest()[:32] + "\n")
            paths.append(d)
        return paths


def policy_of(key: Path):
    from overlay_layout import ed25519
    from overlay_layout.trust import Policy, key_id, read_private_key

    public = ed25519.keypair(read_private_key(str(key)))[0]
    return Policy({key_id(public): public}, allow_unsigned=False, allow_downgrade=False)


def _poll_device(job: tuple[str, str, str]) -> tuple[str, str, int, int]:
    """One device's poll, in a worker process: (device dir, action, requests, bytes received)."""
    from initfs.poll import Device, Options, poll_once
    from overlay_layout.net.transport import Settings
    from overlay_layout.state import Banks

    root, url, key = job
    dev = Device(Banks(root), policy_of(Path(key)), BOARD, "9.9.9", {}, Settings(retries=3, environ={}), root=root,
                 machine=MACHINE)
    result = poll_once(dev, Options(url), lambda _line: None)
    return root, result.action, result.requests, result.received


def _commit(root: str) -> None:
    from overlay_layout.state import Banks

    banks = Banks(root)
    nxt = banks.layout.pointer("next")
    if nxt is not None:
        banks.mark_good(nxt)


def simulate(fleet: Fleet, n: int, url: str, publish: Callable[[str], object], workers: int = 16) -> list[dict]:
    """The four rounds for n devices; `publish(version)` puts a release on the channel. One dict per round:
    requests and bytes per device (mean, max), totals, seconds, what the devices did."""
    devices = [str(d) for d in fleet.devices(n)]
    publish("1.0.0")
    rounds = []
    with Pool(workers) as pool:
        for name in ROUNDS:
            if name.startswith("update"):
                publish("1.1.0")
            start = time.monotonic()
            got = pool.map(_poll_device, [(d, url, str(fleet.key)) for d in devices], chunksize=4)
            took = time.monotonic() - start
            if name.startswith("update"):
                pool.map(_commit, devices)
            reqs, recv = [g[2] for g in got], [g[3] for g in got]
            rounds.append({"round": name, "devices": n, "requests": sum(reqs), "bytes": sum(recv),
                           "requests_per_device": sum(reqs) / n, "bytes_per_device": sum(recv) / n,
                           "max_bytes": max(recv), "seconds": took,
                           "actions": sorted({g[1] for g in got})})
    shutil.rmtree(fleet.root / f"devices-{n}", ignore_errors=True)
    return rounds


def table(results: dict[str, list[dict]]) -> str:
    """A Markdown table: per store and fleet size, each round's requests and bytes per device."""
    lines = ["| store | devices | round | requests/device | bytes/device | all devices | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, rounds in results.items():
        for r in rounds:
            lines.append(f"| {label.split('/')[0]} | {r['devices']} | {r['round']} | {r['requests_per_device']:.2f} | "
                         f"{r['bytes_per_device']:,.0f} | {r['bytes'] / 1e6:.2f} MB in {r['requests']} requests | "
                         f"{r['seconds']:.1f} |")
    return "\n".join(lines)


def on_nginx(fleet: Fleet, sizes: list[int], workers: int = 16) -> dict[str, list[dict]]:
    """The rounds for each fleet size against a channel in a directory that nginx serves; each round's
    requests checked against nginx's access log."""
    from builder.lab.serve import Server
    from builder.publish import publish

    results = {}
    for n in sizes:
        www = fleet.root / f"www-{n}"
        shutil.rmtree(www, ignore_errors=True)
        www.mkdir()
        with Server(www) as srv:
            def put(version: str, www: Path = www) -> None:
                publish(fleet.banks[version], "stable", str(www), fleet.key, [BOARD])

            rounds = simulate(fleet, n, srv.url("stable.json"), put, workers)
            logged = srv.fleet_log()
        if len(logged) != sum(r["requests"] for r in rounds):
            raise BuildError(f"nginx logged {len(logged)} requests, the devices counted "
                               f"{sum(r['requests'] for r in rounds)}")
        for r in rounds:
            r["devices_seen"] = n
        results[f"nginx/{n}"] = rounds
    return results


def on_s3(fleet: Fleet, sizes: list[int], endpoint: str, bucket: str, workers: int = 16) -> dict[str, list[dict]]:
    """The same against a public-read S3 bucket (credentials from the environment, as boto3 reads them)."""
    from builder.publish import publish

    results = {}
    for n in sizes:
        prefix = f"sim-{n}-{int(time.time())}"

        def put(version: str, prefix: str = prefix) -> None:
            publish(fleet.banks[version], "stable", f"s3://{bucket}/{prefix}", fleet.key, [BOARD],
                    endpoint_url=endpoint)

        results[f"s3/{n}"] = simulate(fleet, n, f"{endpoint.rstrip('/')}/{bucket}/{prefix}/stable.json", put, workers)
    return results
