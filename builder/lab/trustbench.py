"""`bankboot bench --only trust`: what keys cost a device, measured like the boot table (builder/lab/bench.py:
the guest's own clock, QEMU's instruction clock by default): the boot of an image signed by N keys where
the initramfs needs all N; the boot of a device whose keys were rotated K times (the chain verified from the
initramfs's root keys at every boot); and `bankctl stage` of a plain bank against an encrypted one of the
same image. Prints numbers; asserts nothing."""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
from pathlib import Path

from builder.board import Board
from builder.lab.bench import BOOT_TIMEOUT, KMSG, PROMPT, _guest_seconds, time_boots

SIGNATURES = (1, 2, 4)
ROTATIONS = (1, 3)
STAGE_MB = 96


def _keys(out: Path, names: list[str], encryption: bool = False) -> list[tuple[Path, Path]]:
    from builder.keys import keygen

    pairs = []
    for name in names:
        if not (out / f"{name}.key").exists():
            keygen(out / name, f"bench {name}", encryption=encryption)
        pairs.append((out / f"{name}.key", out / f"{name}.pub"))
    return pairs


def _steps(timeline: Path) -> dict[str, float]:
    """Seconds per init step of one boot (its timeline.json), by step name."""
    import json

    steps: dict[str, float] = {}
    for s in json.loads(timeline.read_text())["steps"]:
        steps[s["step"]] = steps.get(s["step"], 0.0) + float(s["end"]) - float(s["start"])
    return steps


def _boot(board: Board, initrd: Path, bank: Path, out: Path, name: str, runs: int, clock: str
          ) -> tuple[float, dict[str, float]]:
    """(median Run /init -> image init of later boots, the median of each init step over those boots: one
    boot's steps alone are as noisy as a disk wait)."""
    from builder.disk import build_disk

    fresh = out / f"disk-{name}.img"
    build_disk(board, bank, fresh, 256 << 20, initrd, extra_cmdline=KMSG)
    (out / name).mkdir(exist_ok=True)
    totals: list[float] = []
    steps: dict[str, list[float]] = {}
    for i in range(runs):  # each: a fresh copy, its first boot, a later one whose timeline is kept
        timeline = out / f"timeline-{name}-{i}.json"
        got = time_boots(board, fresh, "frozen", out / name, 1, clock, timeline)
        totals.extend(got["later boots"]["Run /init -> image init"])
        for step, secs in _steps(timeline).items():
            steps.setdefault(step, []).append(secs)
    for disk in (fresh, out / name / "disk-frozen-run.img"):  # 256 MB each, made again by the next run
        disk.unlink(missing_ok=True)
    return statistics.median(totals), {step: statistics.median(v) for step, v in steps.items()}


def run_trust_bench(board: Board, out: Path, runs: int, clock: str) -> None:
    from builder.image import build_image
    from builder.initramfs import TrustPolicy, build_initramfs
    from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
    from builder.signing import add_key_update

    out.mkdir(parents=True, exist_ok=True)
    (out / "keys").mkdir(exist_ok=True)
    rootfs = build_sample_rootfs(board.arch, out / "rootfs")
    keys = _keys(out / "keys", [f"k{i}" for i in range(max(SIGNATURES) + max(ROTATIONS) + 1)])
    rows: list[tuple[str, float, float, float]] = []
    for n in SIGNATURES:  # N signatures, all N needed
        initrd = build_initramfs(board, out / f"initramfs-{n}.img",
                                 policy=TrustPolicy(tuple(p for _, p in keys[:n]), threshold=n)).path
        bank = out / f"signed-{n}.bank"
        build_image(rootfs, "1.0.0", bank, sign_key=tuple(k for k, _ in keys[:n]), persist=SAMPLE_PERSIST)
        total, steps = _boot(board, initrd, bank, out, f"sig{n}", runs, clock)
        rows.append((f"{n} signature(s), threshold {n}", total, steps.get("verify manifest signature", 0.0),
                     steps.get("keys in force", 0.0)))
    root = keys[0]
    initrd = build_initramfs(board, out / "initramfs-1.img", policy=TrustPolicy((root[1],))).path
    for k in ROTATIONS:  # k key updates, each replacing the last key by a new one; the image signed by the last
        chain = out / f"chain-{k}.json"
        chain.unlink(missing_ok=True)
        for i in range(1, k + 1):
            add_key_update(chain, (keys[i][1],), 1, (keys[i - 1][0], keys[i][0]),
                           root_keys=(root[1],) if i == 1 else ())
        bank = out / f"rotated-{k}.bank"
        build_image(rootfs, "1.0.0", bank, sign_key=keys[k][0], key_updates=chain, persist=SAMPLE_PERSIST)
        total, steps = _boot(board, initrd, bank, out, f"rot{k}", runs, clock)
        rows.append((f"{k} key update(s) in force (trust.json + current's chain)", total,
                     steps.get("verify manifest signature", 0.0), steps.get("keys in force", 0.0)))
    title = f"boot ({clock} clock, later boots, median of {runs})"
    print(f"\n{title:<58} {'Run /init -> image init':>24} {'verify signatures':>18} {'keys in force':>14} "
          f"{'both':>9}")
    for label, total, verify, in_force in rows:
        print(f"{label:<58} {total:>22.3f} s {verify * 1000:>15.2f} ms {in_force * 1000:>11.2f} ms "
              f"{(verify + in_force) * 1000:>6.2f} ms")
    _stage(board, out, rootfs, root, runs, clock)


def _stage(board: Board, out: Path, rootfs: Path, root: tuple[Path, Path], runs: int, clock: str) -> None:
    """`bankctl stage` of the same STAGE_MB image plain and encrypted, from /userdata, on the guest's clock."""
    from builder.disk import build_disk
    from builder.image import build_image
    from builder.initramfs import TrustPolicy, build_initramfs
    from builder.lab.boot import disk_vm
    from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
    from overlay_layout.contract import BIN

    device_key, device_pub = _keys(out / "keys", ["device"], encryption=True)[0]
    keyed = dataclasses.replace(board, device_key="/userdata/device.key")
    initrd = build_initramfs(keyed, out / "initramfs-stage.img", policy=TrustPolicy((root[1],))).path
    big = build_sample_rootfs(board.arch, out / "rootfs-big", version="1.1.0")
    (big / "payload").write_bytes(os.urandom(STAGE_MB << 20))  # incompressible: the squashfs keeps its size
    plain, sealed = out / "stage-plain.bank", out / "stage-encrypted.bank"
    build_image(big, "1.1.0", plain, sign_key=root[0], persist=SAMPLE_PERSIST)
    build_image(big, "1.1.0", sealed, sign_key=root[0], persist=SAMPLE_PERSIST, encrypt_to=(device_pub,))
    base = out / "base.bank"
    build_image(rootfs, "1.0.0", base, sign_key=root[0], persist=SAMPLE_PERSIST)
    (out / "device.key").write_bytes(device_key.read_bytes())
    disk = out / "disk-stage.img"
    build_disk(keyed, base, disk, 1024 << 20, initrd, userdata_size=(2 * STAGE_MB + 96) << 20,
               userdata_files=[plain, sealed, out / "device.key"], extra_cmdline=KMSG)
    times: dict[str, list[float]] = {"plain": [], "encrypted": []}
    with disk_vm(keyed, disk, out / "stage", clock=clock) as vm:
        vm.console.expect(PROMPT, BOOT_TIMEOUT)
        for _ in range(runs):
            for kind, bank in (("plain", plain), ("encrypted", sealed)):
                times[kind].append(_guest_seconds(vm, f"{BIN}/bankctl stage /userdata/{bank.name} >/dev/null && "
                                                      f"{BIN}/bankctl mark-bad >/dev/null && {BIN}/bankctl gc "
                                                      f">/dev/null"))
    size = plain.stat().st_size / 1e6
    for path in (disk, plain, sealed):  # a GB of disk and two 100 MB banks, made again by the next run
        path.unlink(missing_ok=True)
    shutil.rmtree(big, ignore_errors=True)
    print(f"\nbankctl stage of a {size:.0f} MB bank from /userdata, then mark-bad and gc ({clock} clock, median of "
          f"{runs}):")
    for kind, ts in times.items():
        t = statistics.median(ts)
        print(f"  {kind:<10} {t:7.2f} s  {size / t:6.1f} MB/s")
