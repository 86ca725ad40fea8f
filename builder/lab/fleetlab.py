"""The fleet lab: several QEMU devices (qemu-aarch64) following one channel on nginx, as `make fleet-demo`
shows it and tests/vm/test_fleet.py checks it.

Each device boots a copy of one disk with the sample image 1.0.0, whose /etc/bankboot/poll.conf points at
the channel (builder/pollservice.py: `bankctl poll --every 5s --reboot`); 1.0.0 is published, then 1.1.0.
Every device polls, stages the delta, reboots into its trial, runs 1.1.0's self-test and commits. One
device ("the variant") boots with `sample.selftest=fail` on its kernel command line: 1.1.0's self-test
fails there, the init falls back to 1.0.0 in the same boot, and its next polls tell the server so
(Bankboot-State: fell-back, with the image and the reason). What each device says about itself (`bankctl
status --json`, asked on its console) is then set against what nginx logged of its requests."""

from __future__ import annotations

import json
import re
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

from builder.board import Board
from builder.disk import build_disk
from builder.errors import BuildError
from builder.lab.boot import disk_vm
from builder.lab.rig import PROMPT, sample_bank
from builder.lab.samplerootfs import build_sample_rootfs
from builder.lab.serve import Server
from builder.pollservice import install_poll_service
from builder.publish import publish
from qemu.vm import VM

VARIANT = "sample.selftest=fail"
EVERY = "5s"
T = 240.0


class Lab:
    """The lab's files under `out`: the channel's directory, the two releases, the devices' disks."""

    def __init__(self, board: Board, out: Path, initramfs: Path, key: Path, devices: int = 3,
                 variants: tuple[int, ...] = (2,)) -> None:
        self.board, self.out, self.initramfs, self.key = board, out, initramfs, key
        self.count, self.variants = devices, variants
        self.www = out / "www"
        self.events: list[tuple[float, str]] = []
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        self.events.append((time.monotonic() - self.start, text))
        print(f"[{time.monotonic() - self.start:6.1f} s] {text}", flush=True)

    def build(self, port: int) -> None:
        """Both releases (polling the channel at `port` of the host, 10.0.2.2 to a guest) and the disk."""
        url = f"http://10.0.2.2:{port}/stable.json"
        self.build_releases(url, "--reboot")
        self.say(f"built 1.0.0 and 1.1.0 (both poll {url} every {EVERY}) and a disk with 1.0.0")

    def build_releases(self, url: str, options: str) -> None:
        """Images 1.0.0 and 1.1.0 whose poll service runs `bankctl poll URL OPTIONS`, 1.1.0 failing its self-test
        on the hardware variant; the devices' disk with 1.0.0."""
        self.banks = {}
        for version in ("1.0.0", "1.1.0"):
            rootfs = build_sample_rootfs(self.board.arch, self.out / f"rootfs-{version}", version=version,
                                         cmdline_selftest=version != "1.0.0")
            install_poll_service(rootfs, url, EVERY, options)
            bank = self.out / f"app-{version}.bank"
            self.banks[version] = (bank, sample_bank(rootfs, version, bank, self.key))
        self.disk = self.out / "disk.img"
        build_disk(self.board, self.banks["1.0.0"][0], self.disk, 256 << 20, self.initramfs)

    def publish(self, version: str) -> None:
        publish(self.banks[version][0], "stable", str(self.www), self.key, [self.board.name])
        self.say(f"published {version} to channel stable")

    def device_vm(self, i: int) -> VM:
        d = self.out / f"device-{i}"
        d.mkdir(exist_ok=True)
        shutil.copyfile(self.disk, d / "disk.img")
        return disk_vm(self.board, d / "disk.img", d, append=VARIANT if i in self.variants else "", reboot=True,
                       net=True)


def status(vm: VM) -> dict:
    rc, out = vm.console.run("bankctl status --json", timeout=T)
    if rc != 0:
        raise BuildError(f"bankctl status failed on a device: {out}")
    return json.loads(out)


def wait_for(what: str, check, timeout: float = T, every: float = 0.5):
    """Poll `check()` until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"the fleet lab waited {timeout:.0f} s for {what}")
        time.sleep(every)


def poll_logs(vms: list[VM]) -> str:
    """The tail of each device's poll log (what a failed lab run needs to say)."""
    out = []
    for i, vm in enumerate(vms):
        try:
            _, text = vm.console.run("tail -n 15 /var/log/bankctl-poll.log", timeout=30)
        except Exception as e:  # a device that is not at its prompt
            text = f"(no prompt: {e})"[:300]
        out.append(f"--- device {i}: /var/log/bankctl-poll.log\n{text}")
    return "\n".join(out)


def run_lab(lab: Lab) -> dict:
    """The whole scenario of the module's docstring; returns what it saw (per device: its status, its
    requests in nginx's log; the times). A timeout says what each device's poller wrote."""
    shutil.rmtree(lab.out, ignore_errors=True)
    lab.www.mkdir(parents=True)
    with Server(lab.www) as srv, ExitStack() as stack:
        lab.build(srv.port)
        lab.publish("1.0.0")
        vms = [stack.enter_context(lab.device_vm(i)) for i in range(lab.count)]
        try:
            return _run(lab, srv, vms)
        except (TimeoutError, AssertionError) as e:  # ConsoleTimeout is an AssertionError
            raise TimeoutError(f"{e}\n{poll_logs(vms)}") from None


def follow_update(lab: Lab, vms: list[VM], since: float) -> dict[int, float]:
    """Each device takes 1.1.0: up on it on trial and committed, or (the hardware variant) fallen back to 1.0.0
    in the same boot, then polling again. Returns each device's seconds from `since` to there."""
    done = {}
    for i, vm in enumerate(vms):
        if i in lab.variants:
            vm.console.expect(r"self-test .*20-hardware failed", T)
            vm.console.expect(r"sample-rootfs: up, version 1\.0\.0", T)
            lab.say(f"device {i}: 1.1.0's self-test failed, back on 1.0.0 in the same boot")
        else:
            vm.console.expect(r"sample-rootfs: up, version 1\.1\.0", T)
            vm.console.expect(r"trial boot; marked good", T)
            lab.say(f"device {i}: 1.1.0 booted on trial and committed itself")
        done[i] = time.monotonic() - since
        vm.console.expect(r"bankctl-poll: polling", T)
        vm.console.expect(PROMPT, T)
    return done


def _run(lab: Lab, srv: Server, vms: list[VM]) -> dict:
    lab.say(f"booted {lab.count} devices (device {', '.join(map(str, lab.variants))} is the hardware variant)")
    for vm in vms:
        vm.console.expect(r"sample-rootfs: up, version 1\.0\.0", T)
        vm.console.expect(r"bankctl-poll: polling", T)
    wait_for("every device's first poll", lambda: len({r["device"] for r in srv.fleet_log()}) >= lab.count)
    lab.say("every device polled the channel: 1.0.0 is what they run")
    published = time.monotonic()
    lab.publish("1.1.0")
    committed = follow_update(lab, vms, published)
    image = lab.banks["1.1.0"][1]["id"]
    statuses = [status(vm) for vm in vms]
    ids = [s["device_id"] for s in statuses]

    def reported() -> bool:
        last = {r["device"]: r for r in srv.fleet_log() if r["uri"] == "/stable.json"}
        return all(d in last and (last[d]["state"] == "fell-back" if i in lab.variants else
                                  last[d]["version"] == "1.1.0") for i, d in enumerate(ids))

    wait_for("every device's report after the update", reported, 60)
    lab.say("every device's next poll says where it is (nginx's log)")
    statuses = [status(vm) for vm in vms]
    log = srv.fleet_log()
    return {"image": image, "statuses": statuses, "log": log, "committed": committed, "events": lab.events,
        "bank_size": lab.banks["1.1.0"][0].stat().st_size}


def device_rows(result: dict, variants: tuple[int, ...]) -> list[dict]:
    """Per device: what it says (status --json) and what nginx logged of it."""
    rows = []
    for i, st in enumerate(result["statuses"]):
        mine = [r for r in result["log"] if r["device"] == st["device_id"]]
        bank = [r for r in mine if r["uri"].endswith(".bank")]
        docs = [r for r in mine if r["uri"] == "/stable.json"]
        booted = next(img for img in st["images"] if img["id"] == st["booted"]["image"])
        rows.append({"device": i, "id": st["device_id"], "variant": i in variants, "running": booted["version"],
                     "image_state": {img["version"]: img["state"] for img in st["images"]},
                     "reason": next((img["reason"] for img in st["images"] if img["state"] == "bad"), None),
                     "polls": len(docs), "not_modified": sum(r["status"] == 304 for r in docs),
                     "bank_requests": len(bank), "bank_bytes": sum(r["sent"] for r in bank),
                     "last_state": docs[-1]["state"] if docs else None,
                     "last_fallback": docs[-1]["fallback"] if docs else None,
                     "last_version": docs[-1]["version"] if docs else None, "poll": st["poll"],
                     "tried": st["booted"].get("tried", [])})
    return rows


def describe(result: dict, variants: tuple[int, ...]) -> str:
    rows = device_rows(result, variants)
    lines = ["| device | id | runs | 1.1.0 here | polls (304) | bank requests | bank bytes | last report |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        report = r["last_state"] + (f" ({r['last_fallback']})" if r["last_fallback"] else "")
        lines.append(f"| {r['device']}{' (variant)' if r['variant'] else ''} | {r['id'][:12]}... | {r['running']} | "
                     f"{r['image_state'].get('1.1.0')} | {r['polls']} ({r['not_modified']}) | {r['bank_requests']} | "
                     f"{r['bank_bytes']:,} | {report} |")
    times = ", ".join(f"device {i}: {t:.0f} s" for i, t in sorted(result["committed"].items()))
    lines.append("")
    lines.append(f"from publishing 1.1.0 to each device up on it and committed (or fallen back): {times}; "
                 f"the bank is {result['bank_size'] / 1e6:.1f} MB")
    return "\n".join(lines)


def check_reason(text: str) -> bool:
    return bool(re.search(r"hardware variant is not supported|20-hardware", text))
