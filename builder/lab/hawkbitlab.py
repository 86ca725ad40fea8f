"""The hawkBit lab: QEMU devices (qemu-aarch64) polling a real goosebit (a hawkBit-DDI rollout server) on the
build host, as `make hawkbit-lab` shows it and tests/vm/test_hawkbit.py checks it.

Each device boots a copy of one disk with the sample image 1.0.0, whose /etc/bankboot/poll.conf runs
`bankctl poll --hawkbit http://10.0.2.2:PORT --every 5s --reboot` (controller id: the device's id). Every
device registers (configData: board, version); 1.1.0 is published as a .swu, uploaded, and rolled out to
the whole feed; each device stages the bank out of the .swu by range, reports as it goes, reboots into its
trial and commits, and its next poll reports `closed success`. One device ("the variant") boots with
`sample.selftest=fail`: its trial fails the self-test, the init falls back to 1.0.0 in the same boot, and
that image reports `closed failure` with the self-test's reason. What goosebit's API then shows of each
device is set against what the device says of itself (`bankctl status --json`, asked on its console)."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

from builder.board import Board
from builder.lab import fleetlab
from builder.lab.fleetlab import follow_update, poll_logs, status, wait_for
from builder.lab.goosebit import Goosebit
from builder.swu import write_swu
from qemu.vm import VM

T = 240.0


class Lab(fleetlab.Lab):
    """The fleet lab's devices and releases (fleetlab.Lab), polling a rollout server instead of a channel."""

    def __init__(self, board: Board, out: Path, initramfs: Path, key: Path, devices: int = 2,
                 variants: tuple[int, ...] = (1,)) -> None:
        super().__init__(board, out, initramfs, key, devices, variants)

    def build(self, port: int) -> None:
        url = f"http://10.0.2.2:{port}"
        self.build_releases(url, "--reboot --hawkbit")
        self.swu = self.out / "app-1.1.0.swu"
        write_swu(self.banks["1.1.0"][0], self.swu, [self.board.name])
        self.say(f"built 1.0.0 and 1.1.0 (both poll the rollout server {url} with bankctl poll --hawkbit), "
                 f"{self.swu.name} and a disk with 1.0.0")


def run_lab(lab: Lab) -> dict:
    """The scenario of the module's docstring; what the server and each device say at the end."""
    shutil.rmtree(lab.out, ignore_errors=True)
    lab.out.mkdir(parents=True)
    with Goosebit(poll="00:00:05") as gb, ExitStack() as stack:
        lab.build(gb.port)
        vms = [stack.enter_context(lab.device_vm(i)) for i in range(lab.count)]
        try:
            return _run(lab, gb, vms)
        except (TimeoutError, AssertionError) as e:
            raise TimeoutError(f"{e}\n{poll_logs(vms)}\n--- goosebit's devices\n"
                               f"{json.dumps(list(gb.devices().values()), indent=1)[:4000]}") from None


def _run(lab: Lab, gb: Goosebit, vms: list[VM]) -> dict:
    lab.say(f"booted {lab.count} devices (device {', '.join(map(str, lab.variants))} is the hardware variant)")
    for vm in vms:
        vm.console.expect(r"sample-rootfs: up, version 1\.0\.0", T)
        vm.console.expect(r"bankctl-poll: polling", T)
    wait_for("every device to register with goosebit", lambda: len([
        d for d in gb.devices().values() if d["last_state"] == "Registered" and d["sw_version"] == "1.0.0"]) >=
        lab.count)
    lab.say("every device registered with goosebit (configData: board, 1.0.0)")
    sid = gb.upload(lab.swu)
    gb.api("PUT", "/rollouts", {"name": "lab-1.1.0", "feed": "default", "software_id": sid})
    published = time.monotonic()
    lab.say(f"uploaded {lab.swu.name} (software {sid}) and rolled it out to feed default")
    done = follow_update(lab, vms, published)
    statuses = [status(vm) for vm in vms]
    ids = [s["device_id"] for s in statuses]

    def reported() -> bool:
        devs = gb.devices()
        return all(d in devs and devs[d]["last_state"] == ("Error" if i in lab.variants else "Finished")
                   for i, d in enumerate(ids))

    wait_for("every device's report of its trial (goosebit's API)", reported, 90)
    lab.say("every device reported its trial; goosebit's record of each:")
    statuses = [status(vm) for vm in vms]
    devices, logs = gb.devices(), {d: gb.device_log(d) for d in ids}
    rollouts = gb.api("GET", "/rollouts")
    return {"image": lab.banks["1.1.0"][1]["id"], "statuses": statuses, "devices": devices, "logs": logs,
            "rollouts": rollouts, "done": done, "events": lab.events}


def describe(result: dict, variants: tuple[int, ...]) -> str:
    lines = ["| device | controller id | runs | goosebit: state, version | its last report |",
             "| --- | --- | --- | --- | --- |"]
    for i, st in enumerate(result["statuses"]):
        d = result["devices"][st["device_id"]]
        booted = next(img for img in st["images"] if img["id"] == st["booted"]["image"])
        last = [line for line in result["logs"][st["device_id"]].splitlines() if line][-1:]
        lines.append(f"| {i}{' (variant)' if i in variants else ''} | {st['device_id'][:12]}... | {booted['version']} "
                     f"| {d['last_state']}, {d['sw_version']} | {last[0] if last else ''} |")
    times = ", ".join(f"device {i}: {t:.0f} s" for i, t in sorted(result["done"].items()))
    lines += ["", f"from the rollout to each device up on 1.1.0 and committed (or fallen back): {times}"]
    return "\n".join(lines)
