"""`make soak` / `bankboot soak`: hundreds of boot cycles on one device (one disk), where the rare interleavings
live: good and bad updates (a self-test that fails, a trial that never commits), ESC presses at the console
(boot previous, or an image chosen in the menu), rollbacks, factory resets, gc, mark-bad of a trial, and real
power cuts (QEMU killed) during a stage, a gc or the init's boot, in a seeded random mix.

Each cycle: the device is up; a file is written to /userdata and fsynced; one event is applied; the device is
booted until its image is up (at most MAX_BOOTS boots); then the guest is asked what runs (its
/etc/sample-version, the root overlay's upper in the mount table, /run/bankboot/booted and its signer),
whether every fsynced /userdata file is intact, whether a requested reset was done, and `bankctl status`.
What may run is worked out here from the status read before the event (`expected`), not taken from the
device's own plan: the policy is checked, not echoed. The planner and the checker are pure functions (unit
tested in tests/unit/test_soak.py); only `run_soak` boots.

A failure stops the soak (the device's state is then suspect) and prints the seed and the cycle: the same
seed and board replay the same choices up to there (a power cut's instant is seeded too, though where it
lands in the guest's work depends on the host's speed)."""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import BuildError
from builder.lab.rig import (
    BOOT_TIMEOUT,
    came_up,
    device_vm,
    fresh_dir,
    sample_bank,
    sample_rootfs,
    signed_initramfs,
    without_kernel_lines,
)

MAX_BOOTS = 4
CMD_TIMEOUT = 240.0
USERDATA_FILES = 6

# Update kinds: the sample rootfs's behaviour on a trial boot.
KINDS = ("good", "selftest-fails", "never-commits")

# Events and their weights in the mix. Each is applied to a running device; `applicable` says when.
WEIGHTS: dict[str, int] = {
    "update-good": 16,
    "update-selftest-fails": 7,
    "update-never-commits": 5,
    "esc-previous": 7,
    "esc-menu": 7,
    "rollback": 7,
    "mark-bad": 6,
    "reset": 6,
    "gc": 6,
    "reboot": 6,
    "cut-stage": 8,
    "cut-boot": 9,
    "cut-gc": 4,
}


@dataclass
class Image:
    id: str
    version: str
    state: str  # good, trial, bad, unknown
    tries: int | None
    pointers: tuple[str, ...]


@dataclass
class Snapshot:
    """What the device said about itself after a boot (`bankctl status --json`)."""
    current: str | None
    previous: str | None
    next: str | None
    running: str
    running_trial: bool
    images: dict[str, Image]

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> Snapshot:
        ptr = status.get("pointers") or {}
        images = {i["id"]: Image(i["id"], i.get("version") or "?", i.get("state") or "unknown", i.get("tries"),
                                 tuple(i.get("pointers") or ())) for i in status.get("images", [])}
        booted = status.get("booted") or {}
        running = booted.get("image") or ""
        # booted.trial says how this boot started; a trial that committed itself since (the image's rcS runs
        # mark-good) is good now, and no longer a trial to mark bad.
        trial = bool(booted.get("trial")) and running in images and images[running].state == "trial"
        return cls(ptr.get("current"), ptr.get("previous"), ptr.get("next"), running, trial, images)


def applicable(snap: Snapshot) -> list[str]:
    """The events that make sense on this device now: updates when nothing is pending and the running image is
    the committed one; mark-bad only on a trial; rollback and ESC-previous only with a previous image."""
    pending = snap.next is not None and (snap.images.get(snap.next) is None or
                                         snap.images[snap.next].state != "bad")
    settled = not pending and snap.running == snap.current and not snap.running_trial
    events = ["reboot", "gc", "cut-boot", "cut-gc", "esc-menu"]
    if settled:
        events += ["update-good", "update-selftest-fails", "update-never-commits", "cut-stage", "reset"]
        if snap.previous:
            events.append("rollback")
    if snap.previous:
        events.append("esc-previous")
    if snap.running_trial:
        events.append("mark-bad")
    return events


def choose_event(snap: Snapshot, rng: random.Random) -> str:
    events = applicable(snap)
    return rng.choices(events, weights=[WEIGHTS[e] for e in events])[0]


def planned(snap: Snapshot, kinds: dict[str, str]) -> set[str]:
    """What a plain boot must bring up, from the pointers and states alone (docs/lifecycle.md, "Choosing the
    image at boot"): a trial with tries left is tried (one whose self-test fails falls back to current in the
    same boot); a good `next` (a rollback or a commit pending) rolls forward; otherwise current."""
    cur = {snap.current} if snap.current else set()
    n = snap.images.get(snap.next or "")
    if n is None:
        return cur
    if n.state == "good":
        return {n.id}
    if n.state == "trial" and (n.tries or 0) > 0:
        return cur if kinds.get(n.id) == "selftest-fails" else {n.id}
    return cur


def expected(snap: Snapshot, event: str, kinds: dict[str, str], staged: str | None = None,
             chosen: str | None = None) -> set[str]:
    """The image ids that may be up after `event` (staged: the id of the bank a stage event staged; chosen:
    what the menu was told to boot)."""
    plan = planned(snap, kinds)
    if event in ("update-good", "update-selftest-fails", "update-never-commits"):
        assert staged is not None
        after = Snapshot(snap.current, snap.previous, staged, snap.running, snap.running_trial,
                         {**snap.images, staged: Image(staged, "?", "trial", 3, ("next",))})
        return planned(after, kinds)
    if event == "cut-stage":  # the stage may have finished (then the trial boots and commits) or not
        assert staged is not None
        return plan | {staged}
    if event == "cut-boot":  # the cut boot may have spent the trial's try, or marked a failing one bad
        return plan | ({snap.current} if snap.current else set())
    if event == "rollback":
        return {snap.previous} if snap.previous else plan
    if event == "mark-bad":
        return {snap.current} if snap.current else set()
    if event == "esc-previous":
        return {snap.previous} if snap.previous else plan
    if event == "esc-menu":
        return {chosen} if chosen else plan
    return plan  # reboot, gc, cut-gc, reset


@dataclass
class GuestReport:
    version: str = ""
    root_upper: str = ""
    booted: dict[str, Any] = field(default_factory=dict)
    userdata: dict[str, str] = field(default_factory=dict)
    reset_mark: bool = False
    status: dict[str, Any] = field(default_factory=dict)


REPORT_COMMAND = ("echo \"@@V $(cat /etc/sample-version)\"; awk '$2 == \"/\" {print \"@@ROOT \" $4}' /proc/mounts; "
                  "echo \"@@B $(cat /run/bankboot/booted)\"; (cd /userdata/soak 2>/dev/null && sha256sum f* | "
                  "sed 's/^/@@U /'); test -e /etc/soak-reset && echo @@RESETMARK; echo @@S; bankctl status --json")


def parse_report(out: str) -> GuestReport:
    """What REPORT_COMMAND printed, without kernel lines the console interleaved."""
    out = without_kernel_lines(out)
    head, _, status = out.partition("@@S\n")
    r = GuestReport()
    for line in head.splitlines():
        if line.startswith("@@V "):
            r.version = line[4:].strip()
        elif line.startswith("@@ROOT "):
            m = re.search(r"upperdir=([^,]+)", line)
            r.root_upper = m.group(1) if m else ""
        elif line.startswith("@@B "):
            r.booted = json.loads(line[4:])
        elif line.startswith("@@U "):
            digest, name = line[4:].split()
            r.userdata[name] = digest
        elif line.startswith("@@RESETMARK"):
            r.reset_mark = True
    r.status = json.loads(status[status.index("{"):status.rindex("}") + 1])
    return r


def check(report: GuestReport, allowed: set[str], versions: dict[str, str], userdata: dict[str, str],
          reset_done: bool = False, kept: set[str] | None = None) -> list[str]:
    """What is wrong with the device after a cycle (empty: nothing). allowed: image ids that may be up;
    versions: id -> version of every bank the soak made; userdata: file name -> sha256 fsynced before the event;
    reset_done: a reset was requested of the image now up; kept: after a gc, the images it could keep."""
    problems = []
    running = report.booted.get("image", "")
    if running not in allowed:
        problems.append(f"{running or 'nothing'} is up, expected {' or '.join(sorted(allowed)) or 'nothing'}")
    if running in versions and report.version != versions[running]:
        problems.append(f"the guest's /etc/sample-version says {report.version}, but {running} is "
                        f"{versions[running]}")
    if f"/{running}/" not in report.root_upper:
        problems.append(f"the root overlay's upper is {report.root_upper!r}, not {running}'s")
    if not report.booted.get("signed_by"):
        problems.append(f"the image up was not verified as signed: {report.booted}")
    for name, digest in userdata.items():
        if report.userdata.get(name) != digest:
            problems.append(f"/userdata/soak/{name} lost or changed (fsynced before the event)")
    if reset_done and report.reset_mark:
        problems.append("/etc/soak-reset is still there: the requested reset was not done")
    snap = Snapshot.from_status(report.status)
    if snap.current is None or snap.current not in snap.images:
        problems.append("no current image after the boot")
    elif snap.images[snap.current].state != "good":
        problems.append(f"current {snap.current} is {snap.images[snap.current].state}, not good")
    if running in snap.images and snap.images[running].state == "bad":
        problems.append(f"the image up ({running}) is marked bad")
    if kept is not None:
        extra = set(snap.images) - kept - {running}
        if extra:
            problems.append(f"gc left {', '.join(sorted(extra))}")
    return problems


def outcome_of(before: Snapshot, after: Snapshot, event: str, refused: bool) -> str:
    """A word for the table: what the cycle ended in."""
    if refused:
        return "refused"
    if after.running_trial:
        return "on trial"
    if after.current != before.current:
        return "rolled back" if after.current == before.previous else "committed"
    if after.running != after.current:
        return "other image (one boot)"
    if before.next and after.next is None and before.next != after.current:
        return "fell back"
    if event.startswith("update-"):  # staged, tried, and current kept: the update failed as it should
        return "fell back"
    return "same image"


def format_table(seed: int, cycles: int, boots: int, seconds: float, table: dict[str, Counter]) -> str:
    outcomes = sorted({o for c in table.values() for o in c})
    width = max([len(o) for o in outcomes] + [8])
    lines = [f"soak: seed {seed}, {cycles} cycles, {boots} boots, {seconds:.0f} s "
             f"({seconds / max(cycles, 1):.1f} s a cycle)",
             f"{'event':<24} {'count':>6} " + " ".join(f"{o:>{width}}" for o in outcomes)]
    for event in sorted(table):
        c = table[event]
        lines.append(f"{event:<24} {sum(c.values()):>6} " + " ".join(f"{c.get(o, 0):>{width}}" for o in outcomes))
    total: Counter = Counter()
    for c in table.values():
        total.update(c)
    lines.append(f"{'total':<24} {sum(total.values()):>6} " + " ".join(f"{total.get(o, 0):>{width}}"
                                                                          for o in outcomes))
    return "\n".join(lines)


# -- booting --------------------------------------------------------------------------------------------------
class SoakFailure(BuildError, AssertionError):
    pass


class Soak:
    def __init__(self, board, out: Path, seed: int, say=print) -> None:
        self.board, self.out, self.seed, self.say = board, out, seed, say
        self.rng = random.Random(seed)
        self.kinds: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.userdata: dict[str, str] = {}
        self.next_patch = 1
        self.banks: dict[str, tuple[Path, str]] = {}  # kind -> (bank file, id) for the next stage
        self.boots = 0
        self.init_seconds = 2.0
        self.stage_seconds = 8.0  # how long a whole `bankctl stage` takes here, as last measured: cuts land inside
        self.gc_seconds = 3.0
        self.vm = None
        self.n = 0

    # building
    def prepare(self) -> None:
        from builder.disk import build_disk

        self.out.mkdir(parents=True, exist_ok=True)
        self.say("soak: building the initramfs and the first image")
        self.initrd, self.sign_key = signed_initramfs(self.board, self.out, "soak", "bankboot soak")
        self.rootfs = {}
        for kind, kw in (("good", {}), ("selftest-fails", {"failing_selftest": True}),
                         ("never-commits", {"mark_good": False})):
            self.rootfs[kind] = sample_rootfs(self.board, self.out / f"rootfs-{kind}", "1.0.0", **kw)
        base = self.out / "banks" / "1.0.0.bank"
        m = sample_bank(self.rootfs["good"], "1.0.0", base, self.sign_key)
        self.kinds[m["id"]], self.versions[m["id"]] = "good", "1.0.0"
        self.disk = self.out / "device.img"
        build_disk(self.board, base, self.disk, 384 << 20, self.initrd)
        self._build_next()

    def _build_next(self) -> None:
        """The three update banks of the next version (one of each kind): attached as disks vdb, vdc, vdd."""
        version = f"2.0.{self.next_patch}"
        for stale in self.out.glob("banks/2.*.bank"):
            stale.unlink()
        for kind in KINDS:
            (self.rootfs[kind] / "etc/sample-version").write_text(version + "\n")
            bank = self.out / "banks" / f"{version}-{kind}.bank"
            m = sample_bank(self.rootfs[kind], version, bank, self.sign_key)
            self.banks[kind] = (bank, m["id"])
            self.kinds[m["id"]], self.versions[m["id"]] = kind, version

    # booting
    def _start(self, append: str = "bankboot.timeout=0"):
        self.n += 1
        log_dir = fresh_dir(self.out / "runs" / f"{self.n % 8}")  # the last few boots' consoles are kept
        vm = device_vm(self.board, self.disk, log_dir, [self.banks[k][0] for k in KINDS], append=append)
        self.boots += 1
        return vm.start()

    def _sh(self, cmd: str) -> str:
        assert self.vm is not None
        rc, out = self.vm.console.run(cmd, timeout=CMD_TIMEOUT)
        if rc != 0:
            raise SoakFailure(f"`{cmd}` exited {rc} in the guest: {out.strip()[-500:]}")
        return out

    def _stop(self) -> None:
        if self.vm is not None:
            self.vm.stop()
            self.vm = None

    def _reboot(self) -> None:
        assert self.vm is not None
        self.vm.console.sendline("reboot")
        try:
            self.vm.wait_exit(120)
        finally:
            self._stop()

    def _up(self, vm, first_expect: bool = True) -> bool:
        from qemu.console import ConsoleTimeout

        try:
            return came_up(vm)
        except ConsoleTimeout:
            return False

    def boot_until_up(self, first=None) -> int:
        """Boot (a reboot makes QEMU exit: -no-reboot) until the image is up. first: a VM already started
        (the boot with ESC pressed). Returns the boots it took."""
        for boot in range(1, MAX_BOOTS + 1):
            vm = first if boot == 1 and first is not None else self._start()
            if self._up(vm):
                self.vm = vm
                return boot
            tail = vm.console.tail(1500)
            vm.stop()
            if "rescue) / # " in tail or "Kernel panic" in tail:
                raise SoakFailure(f"no image came up: {tail}")
        raise SoakFailure(f"no image up within {MAX_BOOTS} boots")

    def report(self) -> GuestReport:
        return parse_report(self._sh(REPORT_COMMAND))

    # the run
    def run(self, cycles: int, minutes: float | None = None) -> dict:
        """minutes: start no cycle after that long (the table says how many ran)."""
        self.prepare()
        start = time.monotonic()
        table: dict[str, Counter] = {}
        vm = self._start()
        vm.console.expect(rb"Run /init", BOOT_TIMEOUT)
        t0 = time.monotonic()
        vm.console.expect(rb"exec /sbin/init", BOOT_TIMEOUT)
        self.init_seconds = time.monotonic() - t0
        self.boot_until_up(vm)
        self._sh("mkdir -p /userdata/soak && sync")
        rep = self.report()
        snap = Snapshot.from_status(rep.status)
        self.say(f"soak: seed {self.seed} (replay: bankboot soak --seed {self.seed} --cycles N); our init runs "
                 f"{self.init_seconds:.1f} s from Run /init to the hand-over")
        cycle = 0
        try:
            for cycle in range(1, cycles + 1):
                if minutes is not None and time.monotonic() - start > minutes * 60:
                    self.say(f"soak: {minutes:g} minutes are up after {cycle - 1} cycles")
                    cycle -= 1
                    break
                event = choose_event(snap, self.rng)
                try:
                    rep, snap2, outcome, boots = self.cycle(cycle, event, snap)
                except SoakFailure as e:
                    raise SoakFailure(f"cycle {cycle} ({event}): {e}") from None
                table.setdefault(event, Counter())[outcome] += 1
                self.say(f"soak: [{cycle}/{cycles}] {event}: {outcome}, {boots} boot(s), up {rep.version} "
                         f"({snap2.running})")
                snap = snap2
        except BaseException as e:  # a failure, or stopped from outside (the table of what ran is still written)
            self._stop()
            seconds = time.monotonic() - start
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                (self.out / "soak.json").write_text(json.dumps(
                    {"seed": self.seed, "cycles": cycle - 1, "boots": self.boots, "seconds": seconds,
                     "failed": None, "stopped": True, "table": {k: dict(v) for k, v in table.items()}}) + "\n")
                self.say(format_table(self.seed, cycle - 1, self.boots, seconds, table))
                raise
            result = {"seed": self.seed, "cycles": cycle - 1, "boots": self.boots, "seconds": seconds,
                      "failed": {"cycle": cycle, "error": str(e)[-3000:]},
                      "table": {k: dict(v) for k, v in table.items()}}
            (self.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
            self.say(format_table(self.seed, cycle - 1, self.boots, seconds, table))
            self.say(f"soak: FAILED at cycle {cycle} (seed {self.seed}; replay: bankboot soak --board "
                     f"{self.board.name} --seed {self.seed} --cycles {cycle}): {type(e).__name__}: {e}")
            return result
        self._stop()
        seconds = time.monotonic() - start
        result = {"seed": self.seed, "cycles": cycle, "boots": self.boots, "seconds": seconds, "failed": None,
                  "table": {k: dict(v) for k, v in table.items()}}
        (self.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
        self.say(format_table(self.seed, cycle, self.boots, seconds, table))
        return result

    def cycle(self, cycle: int, event: str, snap: Snapshot) -> tuple[GuestReport, Snapshot, str, int]:
        assert self.vm is not None
        # A file fsynced on /userdata before anything else happens: it must survive whatever follows.
        name = f"f{cycle % USERDATA_FILES}"
        out = self._sh(f"head -c {self.rng.randint(1, 65536)} /dev/urandom > /userdata/soak/{name}.tmp && "
                       f"mv /userdata/soak/{name}.tmp /userdata/soak/{name} && sync && "
                       f"sha256sum /userdata/soak/{name}")
        self.userdata[name] = without_kernel_lines(out).split()[0]
        staged = chosen = None
        refused = reset = False
        kept = None
        first = None
        if event.startswith("update-") or event == "cut-stage":
            kind = "good" if event == "cut-stage" else event.removeprefix("update-")
            dev = "/dev/vd" + "bcd"[KINDS.index(kind)]
            staged = self.banks[kind][1]
            if event == "cut-stage":
                self.vm.console.sendline(f"bankctl stage {dev} >/dev/null 2>&1 &")
                time.sleep(self.rng.uniform(0.5, self.stage_seconds))
                self.vm.power_cut()
                self._stop()
            else:
                t0 = time.monotonic()
                rc, out = self.vm.console.run(f"bankctl stage {dev} 2>&1 | tail -1", CMD_TIMEOUT)
                self.stage_seconds = time.monotonic() - t0
                if "staged " not in out:
                    raise SoakFailure(f"stage of {staged} failed: {out.strip()[-500:]}")
                self._reboot()
            self.next_patch += 1
            self._build_next()  # before the next boot: that QEMU attaches the banks the next stage reads
        elif event == "rollback":
            rc, out = self.vm.console.run("bankctl rollback 2>&1", CMD_TIMEOUT)
            refused = rc != 0
            self._reboot()
        elif event == "mark-bad":
            self._sh("bankctl mark-bad --reason soak >/dev/null")
            self._reboot()
        elif event == "reset":
            self._sh("echo reset > /etc/soak-reset && sync && bankctl reset >/dev/null")
            reset = True
            self._reboot()
        elif event == "gc":
            t0 = time.monotonic()
            self._sh("bankctl gc >/dev/null")
            self.gc_seconds = time.monotonic() - t0
            kept = {i for i in (snap.current, snap.previous, snap.next, snap.running) if i}
            self._reboot()
        elif event == "cut-gc":
            self.vm.console.sendline("bankctl gc >/dev/null 2>&1 &")
            time.sleep(self.rng.uniform(0, self.gc_seconds))
            self.vm.power_cut()
            self._stop()
        elif event == "cut-boot":
            self._reboot()
            vm = self._start()
            try:
                vm.console.expect(rb"Run /init", BOOT_TIMEOUT)
                time.sleep(self.rng.uniform(0, self.init_seconds))
            finally:
                vm.power_cut()
                vm.stop()
        elif event in ("esc-previous", "esc-menu"):
            self._reboot()
            first = self._start("bankboot.timeout=3 bankboot.menu_timeout=60")
            first.console.expect(rb"Press ESC for the boot menu", BOOT_TIMEOUT)
            first.console.send(b"\x1b")
            first.console.expect(rb"choice: ", 60)
            if event == "esc-previous":
                first.console.send(b"\x1b")
            else:
                menu = first.console.text()[-4000:]
                entries = re.findall(r"[ >] (\d+)\) (\S+)\s+\S+\s+(\w+)", menu.split("bankboot boot menu")[-1])
                good = [(int(i), ident) for i, ident, state in entries if state == "good"]
                if not good:
                    raise SoakFailure(f"the menu offers no good image: {menu}")
                k, chosen = self.rng.choice(good)
                first.console.send(f"{k}".encode())
                time.sleep(0.3)
                first.console.send(b"\r")
        else:  # reboot
            self._reboot()
        if self.vm is not None:
            self._stop()
        boots = self.boot_until_up(first)
        rep = self.report()
        allowed = expected(snap, event, self.kinds, staged, chosen)
        if refused:
            allowed = planned(snap, self.kinds)
        problems = check(rep, allowed, self.versions, self.userdata, reset_done=reset, kept=kept)
        if reset and rep.booted.get("image") != snap.running:
            problems.append("the reset was requested of another image than the one up")
        if problems:
            raise SoakFailure("; ".join(problems))
        after = Snapshot.from_status(rep.status)
        return rep, after, outcome_of(snap, after, event, refused), boots


def run_soak(board, out: Path, seed: int, cycles: int, say=print, minutes: float | None = None) -> dict:
    return Soak(board, out, seed, say).run(cycles, minutes)
