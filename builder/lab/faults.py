"""`make faults` / `bankboot faults`: the never-brick campaign on a QEMU board. Seeded, printing its seed.

Power cuts are real: QEMU is killed (SIGKILL) at a random instant during an operation, so every write the
guest had not made durable is lost and nothing of ours runs in the guest afterwards. Disk faults are
written offline into the disk image (faultdisk.py). After each fault the device is booted until its image
reports that it is up (at most MAX_BOOTS boots), and the guest itself is asked: which image runs (its own
/etc/sample-version), whether the init verified its signature, the state of its banks (`bankctl status`),
and the sha256 of /userdata files written and fsynced before the fault."""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from builder import bankspart
from builder.board import Board
from builder.lab import faultdisk
from builder.lab.rig import (
    BOOT_TIMEOUT,
    NO_PROMPT,
    PROMPT,
    GuestError,
    boot_entries,
    came_up,
    copy_device,
    device_vm,
    fat_read,
    fat_write,
    fresh_dir,
    power_off,
    sample_banks,
    sh,
    signed_initramfs,
    version_up,
    write_userdata,
)
from overlay_layout.contract import BANKS, BOOTED, KIT
from qemu.console import ConsoleTimeout
from qemu.vm import VM

MAX_BOOTS = 4
POWER_CLASSES = ("stage", "mark-good", "boot", "reset", "gc")
DISK_CLASSES = ("full", "kit-planted", "state-garbage", "state-empty", "state-shape", "state-huge",
                "bootlog-garbage", "current-loop", "current-absolute", "current-dangling", "squashfs-middle",
                "manifest-deleted", "userdata-wiped", "serial-noise")
TRIES = 3
NOISE_WINDOW = "bankboot.timeout=2 bankboot.menu_timeout=5"
# Disk classes whose image falls back to previous: they start from the committed device.
NEEDS_PREVIOUS = ("squashfs-middle", "manifest-deleted")


@dataclass
class Outcome:
    fault: str
    detail: str
    recovered: bool
    boots: int
    version: str | None = None
    bytes_lost: int = 0
    trial_boots: int = 0
    error: str = ""


@dataclass
class Campaign:
    """Everything one campaign boots: images, prepared disks, the initramfs trusting the campaign's key."""
    board: Board
    out: Path
    rng: random.Random
    disks: dict[str, Path] = field(default_factory=dict)
    banks: dict[str, Path] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    userdata: dict[str, tuple[str, int]] = field(default_factory=dict)  # guest path -> (sha256, size), fsynced
    stage_seconds: float = 8.0
    init_seconds: float = 2.5  # from "Run /init" to the hand-over, measured in prepare()
    n: int = 0
    current: str = "1.1.0"  # the committed version of the device the classes start from, and its previous
    previous: str | None = "1.0.0"

    @property
    def second_disk(self) -> bool:
        """Whether the board takes the update as a second disk (virtio); a Pi has one SD slot, so its updates
        are files on /userdata, put there when the disk is made."""
        return "if=sd" not in " ".join(self.board.qemu_disk)

    def update_path(self, name: str) -> str:
        """Where the guest finds update bank `name`."""
        return "/dev/vdb" if self.second_disk else f"/userdata/{name}.bank"

    @property
    def firmware(self) -> str:
        """What the campaign's disks boot through: the board's own firmware (U-Boot, UEFI), else direct."""
        return self.board.firmware


def disks_for(plan: list[tuple[str, str]]) -> set[str]:
    """The prepared devices a plan boots: `committed` (1.1.0 over 1.0.0, made by a real update in the guest),
    `trial` (1.3.0 on trial over it), `gc` (a 64 MB image staged and marked bad). A plan of power cuts during
    stage, boot and reset and of disk faults that need no previous image runs on the fresh disk alone (1.0.0,
    made offline): what the slices in `make test` do, with no boot spent on preparing."""
    need = set()
    for kind, fault in plan:
        if kind == "disk" and fault in NEEDS_PREVIOUS:
            need.add("committed")
        elif kind == "cut" and fault == "mark-good":  # a cut boot runs on whichever of these are there
            need |= {"committed", "trial"}
        elif kind == "cut" and fault == "gc":
            need |= {"committed", "gc", "big"}
        if kind == "cut" and fault == "stage":
            need.add("big")
    return need


def prepare(board: Board, out: Path, rng: random.Random, say=print, need: set[str] | None = None,
            big_mb: int = 64, signed: tuple[Path, Path] | None = None) -> Campaign:
    """need: the prepared devices (disks_for); None: all of them. big_mb: the size of the image whose stage is
    cut (incompressible, so a cut lands inside the copy). signed: (an initramfs, the private key of a public
    key it trusts), one the caller built already (the test suite's); default a campaign key and initramfs."""
    from builder.disk import build_disk

    need = {"committed", "trial", "gc", "big"} if need is None else need
    wanted = {"base", "good" if "committed" in need else "", "big" if need & {"big", "gc"} else "",
              "no-mark-good" if "trial" in need else ""}
    out.mkdir(parents=True, exist_ok=True)
    campaign = Campaign(board, out, rng)
    if signed is None:
        say("faults: building the initramfs and images")
        initrd, sign_key = signed_initramfs(board, out, "campaign", "bankboot fault campaign")
    else:
        initrd, sign_key = signed
    images = [(name, version, behaviour) for name, version, behaviour in
              [("base", "1.0.0", {}), ("good", "1.1.0", {}), ("big", "1.2.0", {}),
               ("no-mark-good", "1.3.0", {"mark_good": False})] if name in wanted]
    # big: incompressible, so its stage takes a while and cuts land inside it
    for name, (bank, m) in sample_banks(board, out, images, sign_key, payload_mb={"big": big_mb}).items():
        campaign.banks[name], campaign.ids[name] = bank, m["id"]
    fresh = out / "fresh.img"
    # A /userdata file written before the device ever booted: every class must keep it.
    seed_file = out / "base"
    seed_file.write_bytes(random.Random(2).randbytes(65536))
    campaign.userdata["/userdata/base"] = (hashlib.sha256(seed_file.read_bytes()).hexdigest(), 65536)
    # Through the board's firmware (docs/firmware.md): it reads the command line from the disk, so the campaign's
    # options are written there. 512 MiB: a power of two (the Pi's SD card) with room for two loaders.
    updates = [] if campaign.second_disk else [p for n, p in campaign.banks.items() if n != "base"]
    build_disk(board, campaign.banks["base"], fresh, 512 << 20, initrd, boot_size=None, firmware=board.firmware,
               extra_cmdline=NO_PROMPT if board.firmware != "direct" else "",
               userdata_files=[seed_file, *updates], userdata_size=userdata_room(updates))
    campaign.disks["committed"] = fresh
    campaign.current, campaign.previous = "1.0.0", None
    if "committed" in need:
        # committed: 1.1.0 current, 1.0.0 previous, a /userdata file fsynced.
        committed = out / "committed.img"
        copy_device(fresh, committed)
        say("faults: preparing a device with 1.1.0 committed over 1.0.0")
        with _vm(campaign, committed, "prep-committed", update="good", reboot=True) as vm:
            vm.console.expect(rb"Run /init", BOOT_TIMEOUT)
            start = time.monotonic()
            vm.console.expect(rb"exec /sbin/init", BOOT_TIMEOUT)
            campaign.init_seconds = time.monotonic() - start
            version_up(vm)
            sh(vm, f"bankctl stage {campaign.update_path('good')}")
            vm.console.sendline("reboot")
            vm.console.expect(r"Linux version", BOOT_TIMEOUT)  # "Booting Linux on physical CPU" is ARM's only
            if version_up(vm) != "1.1.0":
                raise GuestError("the update did not commit while preparing the campaign")
            campaign.userdata["/userdata/committed"] = write_userdata(vm, "/userdata/committed", 65536)
            power_off(vm)
        campaign.disks["committed"] = committed
        campaign.current, campaign.previous = "1.1.0", "1.0.0"
    # trial: 1.3.0 (never marks itself good) staged over the committed device; gc: 1.2.0 staged, marked bad.
    for name, update, then in (("trial", "no-mark-good", ""), ("gc", "big", "bankctl mark-bad >/dev/null;")):
        if name not in need:
            continue
        disk = out / f"{name}.img"
        copy_device(campaign.disks["committed"], disk)
        with _vm(campaign, disk, f"prep-{name}", update=update, reboot=True) as vm:
            version_up(vm)
            start = time.monotonic()
            sh(vm, f"bankctl stage {campaign.update_path(update)} >/dev/null; {then} sync")
            if name == "gc":
                campaign.stage_seconds = time.monotonic() - start
            power_off(vm)
        campaign.disks[name] = disk
    say(f"faults: our init runs {campaign.init_seconds:.1f} s from Run /init to the hand-over; a {big_mb} MB stage "
        f"takes {campaign.stage_seconds:.1f} s in the guest")
    return campaign


def _vm(campaign: Campaign, disk: Path, name: str, update: str | None = None, append: str = NO_PROMPT,
        reboot: bool = False) -> VM:
    """rig.device_vm with the update bank `update` as a second disk where the board takes one. A disk that
    boots through a firmware carries its command line (set_options)."""
    return device_vm(campaign.board, disk, fresh_dir(campaign.out / "runs" / name),
                     [campaign.banks[update]] if update and campaign.second_disk else [],
                     append=append if campaign.firmware == "direct" else "", reboot=reboot)


def set_options(disk: Path, firmware: str, options: str) -> None:
    """Replace the bankboot.timeout/menu_timeout options on the command line a firmware reads from the disk's
    boot FAT (slot a's cmdline.env for U-Boot, every systemd-boot entry for UEFI), as a person editing it
    would: the campaign's noise class needs an ESC window, the others none."""
    def edit(cmdline: str) -> str:
        words = [w for w in cmdline.split() if not w.startswith(("bankboot.timeout=", "bankboot.menu_timeout="))]
        return " ".join([*words, *options.split()])

    tmp = disk.parent / "runs"
    tmp.mkdir(exist_ok=True)
    if firmware == "uboot":
        text = fat_read(disk, "a/cmdline.env").decode().strip().rstrip("\0")
        fat_write(disk, "a/cmdline.env", ("bb_args=" + edit(text.removeprefix("bb_args=")) + "\n").encode(), tmp)
        return
    for entry in boot_entries(disk):
        text = fat_read(disk, entry).decode()
        fat_write(disk, entry, "\n".join(f"options {edit(line[8:])}" if line.startswith("options ") else line
                                          for line in text.split("\n")).encode(), tmp)


def line_noise(rng: random.Random) -> bytes:
    """Random bytes as a noisy serial line makes them: XON/XOFF, control characters and escape-sequence
    debris. Never digits, Enter or ESC: those could spell a real choice (two ESCs are ESC ESC, "boot
    previous", exactly as a held ESC key); recover() adds at most one stray ESC to a run of noise."""
    keys = set(b"123456789\r\n\x1b")
    noise = bytes(b for b in rng.randbytes(rng.randint(1, 24)) if b not in keys)
    return noise + (b"\x13" if rng.random() < 0.3 else b"")  # XOFF: would stop the console's output


def _measure_init(campaign: Campaign, text: str) -> None:
    """How long our init ran in a boot that came up (kernel clock, "Run /init" to the hand-over): where a cut
    of the init's boot may land, on this host as loaded as it is now."""
    start = re.search(r"\[\s*(\d+\.\d+)\] Run /init", text)
    end = re.search(r"\[\s*(\d+\.\d+)\] [^\n]*exec /sbin/init", text)
    if start and end and float(end.group(1)) > float(start.group(1)):
        campaign.init_seconds = float(end.group(1)) - float(start.group(1))


def recover(campaign: Campaign, disk: Path, name: str, noise: bool = False,
            update: str | None = None) -> tuple[VM | None, int, list[str]]:
    """Boot until the image says it is up (a reboot makes QEMU exit: -no-reboot). Returns the running VM
    (the caller stops it), the boots it took and each boot's console text."""
    logs = []
    for boot in range(1, MAX_BOOTS + 1):
        append = NOISE_WINDOW if noise else NO_PROMPT
        if noise and boot == 1 and campaign.firmware != "direct":
            set_options(disk, campaign.firmware, NOISE_WINDOW)
        vm = _vm(campaign, disk, f"{name}-recover{boot}", update=update, append=append).start()
        try:
            if noise:
                vm.console.expect(rb"Press ESC for the boot menu", BOOT_TIMEOUT)
                esc_at = campaign.rng.randrange(24)  # 12 bursts: half the runs get one stray ESC
                for i in range(12):  # well inside the 2 s window
                    vm.console.send(line_noise(campaign.rng) + (b"\x1b" if i == esc_at else b""))
                    time.sleep(campaign.rng.uniform(0, 0.05))
            if not came_up(vm, prompt_timeout=30):
                logs.append(vm.console.text())
                vm.stop()
                return None, boot, logs
            if noise:  # whatever noise reached the image's shell: run it away as one (failing) command line
                vm.console.send(b"\x15\n")
                vm.console.expect(PROMPT, 30)
            logs.append(vm.console.text())
            _measure_init(campaign, logs[-1])
            return vm, boot, logs
        except ConsoleTimeout:
            logs.append(vm.console.text())
            vm.stop()  # rebooted (QEMU exited) or hung: the next boot
    return None, MAX_BOOTS, logs


def check(campaign: Campaign, vm: VM | None, boots: int, logs: list[str], fault: str, detail: str, expect: set[str],
          userdata: dict[str, tuple[str, int]], trial: str | None = None, gone: tuple[str, ...] = (),
          must: tuple[tuple[str, str], ...] = ()) -> Outcome:
    """`gone`: files the image must not show any more (a reset that was requested must be done). `must`:
    (command, text its output must hold) asked of the guest. Asks the guest what runs and whether its data
    survived."""
    trial_boots = sum(len(re.findall(rf"booting image {re.escape(trial)} \((selected.*)?trial", t)) for t in logs) \
        if trial else 0
    if vm is None:
        return Outcome(fault, detail, False, boots, error="no image came up: " + logs[-1][-1500:] if logs else "")
    try:
        from builder.lab.soak import parse_report

        # One round trip (a loaded host pays seconds for each): the version, the root overlay in the mount table,
        # the boot's record, every fsynced file's sha256, then bankctl status.
        loop = (f"for f in {' '.join(userdata)}; do echo \"@@U $(sha256sum $f 2>/dev/null || echo - $f)\"; done; "
                if userdata else "")
        report = parse_report(sh(vm, f"echo \"@@V $(cat /etc/sample-version)\"; "
                                      f"awk '$2 == \"/\" {{print \"@@ROOT \" $4}}' /proc/mounts; "
                                      f"echo \"@@B $(cat {BOOTED})\"; {loop}echo @@S; bankctl status --json", 180))
        version, booted, status = report.version, report.booted, report.status
        lost = sum(size for path, (digest, size) in userdata.items() if report.userdata.get(path) != digest)
        problems = []
        if f"/{booted.get('image')}/" not in report.root_upper:
            problems.append(f"the root overlay's upper ({report.root_upper}) is not the booted image's "
                            f"({booted.get('image')})")
        if version not in expect:
            problems.append(f"version {version} is up, expected {' or '.join(sorted(expect))}")
        if not booted.get("signed_by"):
            problems.append(f"the image up was not verified as signed: {booted}")
        if trial_boots > TRIES:
            problems.append(f"the trial booted {trial_boots} times, more than its {TRIES} tries")
        entry = next((i for i in status.get("images", []) if i["id"] == trial), None)
        if entry and entry["state"] == "trial" and trial_boots > TRIES - (entry["tries"] or 0):
            problems.append(f"the trial booted {trial_boots} times but only {TRIES - entry['tries']} tries "
                            f"are spent on the device")
        if lost:
            problems.append(f"{lost} bytes of fsynced /userdata files lost")
        for command, text in must:
            out = vm.console.run(command, 180)[1]
            if text not in out:
                problems.append(f"`{command}` says {out.strip()!r}, expected {text!r}")
        for path in gone:
            if vm.console.run(f"test -e {path}", 60)[0] == 0:
                problems.append(f"{path} is still there: the requested reset was not done")
        if status.get("pointers", {}).get("current") is None:
            problems.append("no current pointer after recovery")
        return Outcome(fault, detail, not problems, boots, version, lost, trial_boots, "; ".join(problems))
    finally:
        vm.stop()


# -- power cuts ---------------------------------------------------------------------------------------------
def _cut_boot(campaign: Campaign, disk: Path, name: str, delay: float) -> str:
    """Boot the disk and pull the plug `delay` seconds after the kernel starts our /init. Returns the
    console text up to the cut."""
    vm = _vm(campaign, disk, name).start()
    try:
        vm.console.expect(rb"Run /init", BOOT_TIMEOUT)
        time.sleep(delay)
        vm.power_cut()
    finally:
        text = vm.console.text()
        vm.stop()
    return text


def cut_during(campaign: Campaign, fault: str) -> Outcome:
    campaign.n += 1
    name = f"{campaign.n:03d}-{fault}"
    disk = campaign.out / "work.img"
    source = {"stage": "committed", "mark-good": "trial",
              "boot": campaign.rng.choice(["committed", "trial"] if "trial" in campaign.disks else ["committed"]),
              "reset": "committed", "gc": "gc"}[fault]
    copy_device(campaign.disks[source], disk)
    userdata = dict(campaign.userdata)
    trial = campaign.ids["no-mark-good"] if source == "trial" else campaign.ids["big"] if fault == "stage" else None
    # A trial with tries left boots (and 1.3.0 never commits itself, so it is still on trial, or committed
    # by the cut `mark-good`); everything else boots the committed 1.1.0.
    cur = campaign.current
    expect = {"stage": {cur}, "mark-good": {"1.3.0"}, "reset": {cur}, "gc": {cur},
              "boot": {"1.3.0"} if source == "trial" else {cur}}[fault]
    pre_logs = []
    if fault == "boot":  # anywhere in our init, from the kernel's "Run /init" to the hand-over
        delay = campaign.rng.uniform(0, campaign.init_seconds)
        pre_logs.append(_cut_boot(campaign, disk, name, delay))
        detail = f"{delay:.2f} s after Run /init"
    else:
        command = {"stage": f"bankctl stage {campaign.update_path('big')}", "mark-good": "bankctl mark-good",
                   "gc": "bankctl gc", "reset": "bankctl reset"}[fault]
        span = {"stage": campaign.stage_seconds, "mark-good": 1.5, "gc": 3.0, "reset": campaign.init_seconds}[fault]
        delay = campaign.rng.uniform(0, span)
        vm = _vm(campaign, disk, name, update="big" if fault == "stage" else None).start()
        try:
            version_up(vm)
            path = f"/userdata/f{campaign.n}"
            userdata[path] = write_userdata(vm, path, campaign.rng.randint(1, 200000))
            if fault == "reset":  # the reset is applied by the init at the next boot: cut that boot
                sh(vm, "echo changed > /etc/changed; sync; bankctl reset >/dev/null")
                vm.console.sendline("reboot -f")
                vm.wait_exit(60)
            else:
                vm.console.sendline(f"{command} >/dev/null 2>&1 &")
                time.sleep(delay)
                vm.power_cut()
        finally:
            pre_logs.append(vm.console.text())
            vm.stop()
        detail = f"{delay:.2f} s into `{command}`"
        if fault == "reset":
            pre_logs.append(_cut_boot(campaign, disk, name + "-b", delay))
            detail = f"in the boot applying the reset, {delay:.2f} s after Run /init"
    must: tuple[tuple[str, str], ...] = ()
    if fault == "stage":
        # Staged completely before the cut (`next` written): the trial boots and commits itself.
        with bankspart.banks_partition(disk, write=False) as part:
            if bankspart.pointer_or_none(part, "next") == campaign.ids["big"]:
                expect = {"1.2.0"}
                detail += " (the stage had finished)"
            else:  # whatever the cut left, the same bank stages now
                must = ((f"bankctl stage {campaign.update_path('big')} 2>&1 | tail -1",
                         f"staged {campaign.ids['big']}"),)
    up, boots, logs = recover(campaign, disk, name, update="big" if fault == "stage" else None)
    return check(campaign, up, boots, pre_logs + logs, "power cut: " + fault, detail, expect, userdata, trial,
                 gone=("/etc/changed",) if fault == "reset" else (), must=must)


# -- disk faults ----------------------------------------------------------------------------------------------
def disk_fault(campaign: Campaign, fault: str) -> Outcome:
    campaign.n += 1
    name = f"{campaign.n:03d}-{fault}"
    disk = campaign.out / "work.img"
    copy_device(campaign.disks["committed"], disk)
    userdata = dict(campaign.userdata)
    expect = {campaign.current}
    detail = ""
    must: tuple[tuple[str, str], ...] = ()
    if fault == "userdata-wiped":
        faultdisk.wipe_partition(disk, 3)
        userdata = {}
        detail = "first 8 MB of the userdata partition zeroed"
    elif fault != "serial-noise":
        with bankspart.banks_partition(disk) as part:
            current = bankspart.pointer(part, "current")
            if fault == "full":
                detail = f"{faultdisk.fill(part)} free blocks allocated"
            elif fault == "kit-planted":
                # Where older builds kept bankctl's kit: a planted one must be removed, never run.
                kit = f"overlay/{current}/utils/bankboot-planted"
                faultdisk.plant_file(part, f"{kit}/init", b"#!/bin/sh\necho PLANTED-KIT-RAN > /dev/console\n")
                detail = f"{kit}/init planted"
                must = ((f"grep -c ' {KIT} [^ ]* ro,' /proc/mounts", "1"),
                        (f"ls {BANKS}/overlay/*/utils/ | grep -c planted", "0"))
            elif fault.startswith("state-"):
                data = {"state-garbage": campaign.rng.randbytes(300), "state-empty": b"",
                        "state-shape": b'{"format": 1, "images": {"x": [1]}, "reset": 7, "floor": 1}',
                        "state-huge": b'{"format": 1, "images": {}, "pad": "' + b"x" * (3 << 20) + b'"}'}[fault]
                faultdisk.replace_file(part, "state.json", data)
                detail = f"state.json replaced by {len(data)} bytes"
            elif fault == "bootlog-garbage":
                faultdisk.replace_file(part, "boot-log.json", b'[{"image": [' * 2000 + campaign.rng.randbytes(100))
                detail = "boot-log.json replaced by deep garbage"
            elif fault.startswith("current-"):
                target = {"current-loop": "current", "current-absolute": f"/overlay/{current}",
                          "current-dangling": "1.9.9-nosuchimage"}[fault]
                faultdisk.set_symlink(part, "current", target)
                detail = f"current -> {target}"
            elif fault == "squashfs-middle":
                at = faultdisk.overwrite_middle(part, f"overlay/{current}/rootfs.squashfs", 256 << 10, campaign.rng)
                detail = f"256 KiB of random bytes at offset {at} of current's squashfs"
                expect = {campaign.previous or "none"}
            elif fault == "manifest-deleted":
                bankspart.debugfs(part, f"rm overlay/{current}/manifest.json")
                if "File not found" not in bankspart.debugfs(part, f"stat overlay/{current}/manifest.json"):
                    raise faultdisk.FaultError("the manifest is still there")
                detail = "current's manifest.json deleted"
                expect = {campaign.previous or "none"}
    else:
        detail = "random bytes on the serial line during the ESC window"
    vm, boots, logs = recover(campaign, disk, name, noise=fault == "serial-noise")
    return check(campaign, vm, boots, logs, "disk: " + fault if fault != "serial-noise" else "console: noise", detail,
                 expect, userdata, must=must)


# -- the campaign -------------------------------------------------------------------------------------------------

def userdata_room(updates: list[Path]) -> int:
    """The userdata partition's size: the default 64 MiB, or, on a board whose updates are files on /userdata (one
    SD slot: the Pis), room for them too (the 64 MB image whose stage the cuts land in does not fit beside the
    rest in 64 MiB)."""
    from builder.disk import MiB

    need = sum(p.stat().st_size for p in updates)
    return 64 * MiB + (-(-need // MiB) + 16) * MiB if need else 64 * MiB


def loader_classes_absent(board: Board) -> str:
    """Why a board has no loader classes ('' if it has): a loader A/B needs firmware with slots and an image that
    can carry the new loader's kernel (install-loader copies it from the image)."""
    from builder.kernelfile import KEXEC_FILE_ARCHES

    if board.firmware == "direct":
        return "it boots direct (no loader slots)"
    if board.arch.debian not in KEXEC_FILE_ARCHES:
        return (f"its images cannot carry a kernel ({board.arch.debian}: no kexec, builder/kernelfile.py), so "
                f"install-loader has no new loader to install")
    return ""


def run_campaign(board: Board, out: Path, seed: int, cuts: int, disk_classes: tuple[str, ...] = DISK_CLASSES,
                 say=print, loader_rounds: int = 0, plan_override: list[tuple[str, str]] | None = None,
                 need: tuple[str, ...] = ("committed", "trial", "gc", "big"), big_mb: int = 64,
                 loader_classes: tuple[str, ...] | None = None, signed: tuple[Path, Path] | None = None) -> dict:
    """loader_rounds: that many rounds of the loader classes (builder/lab/loaderfaults.py) on a disk made for the
    board's firmware, after the rest; none for a board that boots direct."""
    say(f"faults: seed {seed} (rerun with --seed {seed}), {cuts} power cuts, {len(disk_classes)} disk faults")
    started = time.monotonic()
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    plan = [("cut", POWER_CLASSES[i % len(POWER_CLASSES)]) for i in range(cuts)] + [("disk", d) for d in disk_classes]
    if plan_override is not None:
        plan = plan_override
    # --cuts 0 --no-disk-faults: the loader classes only
    campaign = prepare(board, out, rng, say, need=disks_for(plan) | set(need), big_mb=big_mb,
                  signed=signed) if plan else None
    for i, (kind, fault) in enumerate(plan, 1):
        try:
            assert campaign is not None
            o = cut_during(campaign, fault) if kind == "cut" else disk_fault(campaign, fault)
        except Exception as e:  # the harness itself: reported as a failure of that injection
            o = Outcome(fault, "", False, 0, error=f"{type(e).__name__}: {str(e)[-800:]}")
        outcomes.append(o)
        mark = "ok" if o.recovered else "FAILED"
        say(f"faults: [{i}/{len(plan)}] {o.fault}: {o.detail}: {mark}, {o.boots} boot(s), up {o.version}"
            + (f": {o.error}" if o.error else ""))
    if loader_rounds:
        from builder.lab.loaderfaults import run_loader_faults

        why = loader_classes_absent(board)
        if why:
            say(f"faults: no loader classes on {board.name}: {why}")
        else:
            try:
                outcomes += run_loader_faults(board, out / "loader", rng, loader_rounds, say, loader_classes)
            except Exception as e:  # preparing the loader device: one failed injection, the rest still reported
                outcomes.append(Outcome("loader: prepare", "", False, 0, error=f"{type(e).__name__}: {str(e)[-800:]}"))
                say(f"faults: the loader classes could not start: {type(e).__name__}: {e}")
    report = summarize(outcomes, seed)
    report["board"], report["seconds"] = board.name, round(time.monotonic() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    say(format_table(report))
    return report


# The slices of `make test` (tests/vm/test_faults.py): a few injections per board that need no prepared device
# (no boot spent before the first injection), different classes on each board, dealt from the seed.
SLICE_BOARDS = {"qemu-aarch64": 2, "qemu-armv7": 1, "raspberrypi3": 1, "qemu-x86_64": 1}  # disk classes each
SLICE_CUTS = ("stage", "boot", "reset")


def slice_plans(seed: int) -> dict[str, list[tuple[str, str]]]:
    """One power cut and SLICE_BOARDS[board] disk faults per board: every fresh-disk cut class and five of the
    twelve fresh-disk disk classes each run, on a board the seed picks (qemu-aarch64, the fastest, takes two
    disk classes). Over runs every class runs on every board."""
    rng = random.Random(seed)
    cuts = [*SLICE_CUTS, rng.choice(SLICE_CUTS)]
    rng.shuffle(cuts)
    disks = [d for d in DISK_CLASSES if d not in NEEDS_PREVIOUS]
    rng.shuffle(disks)
    plans = {}
    for board, n in SLICE_BOARDS.items():
        # the disk classes first: their boots measure how long the init runs here, where the cut lands
        plans[board] = [("disk", disks.pop()) for _ in range(n)] + [("cut", cuts.pop())]
    return plans


def summarize(outcomes: list[Outcome], seed: int) -> dict:
    rows: dict[str, dict] = {}
    for o in outcomes:
        r = rows.setdefault(o.fault, {"fault": o.fault, "injections": 0, "recovered": 0, "max_boots": 0,
                                      "bytes_lost": 0})
        r["injections"] += 1
        r["recovered"] += o.recovered
        r["max_boots"] = max(r["max_boots"], o.boots)
        r["bytes_lost"] += o.bytes_lost
    return {"seed": seed, "injections": len(outcomes), "recovered": sum(o.recovered for o in outcomes),
            "bytes_lost": sum(o.bytes_lost for o in outcomes), "classes": list(rows.values()),
            "outcomes": [asdict(o) for o in outcomes]}


def format_table(report: dict) -> str:
    lines = [f"{'fault class':<30} {'injections':>10} {'recovered':>9} {'boots (max)':>11} {'bytes lost':>10}"]
    for r in report["classes"]:
        lines.append(f"{r['fault']:<30} {r['injections']:>10} {r['recovered']:>9} {r['max_boots']:>11} "
                     f"{r['bytes_lost']:>10}")
    lines.append(f"{'total':<30} {report['injections']:>10} {report['recovered']:>9} {'':>11} "
                 f"{report['bytes_lost']:>10}   (seed {report['seed']})")
    return "\n".join(lines)
