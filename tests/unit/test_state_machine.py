"""The bank state machine under hypothesis, with a power cut before any durable write.

The model is a device: it stages images, reboots (the init walking the boot policy's candidates, some of
which may be damaged), the running image calls mark-good / mark-bad / boot-ok / rollback / reset / gc and
writes to /userdata, the init applies resets and appends to the boot log, and at any durable write the
power may go. A power cut is what a real one is: the partition is put back as it was at the cut point,
so nothing written after it survives, the failing operation's own clean-up included. After every
(re)boot the invariants must hold."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from initfs.switchroot import remove_old_kits
from overlay_layout import bootlog, durable
from overlay_layout.layout import Layout
from overlay_layout.policy import LAST_RESORT, PINNED, SPEND_TRY, Candidate, Plan, below_floor
from overlay_layout.records import Prepared
from overlay_layout.stage import StageError, stage
from overlay_layout.state import BAD, GOOD, TRIAL, Banks, StateError, check_state, walk
from tests.banks import DEV, boot, install_first_image, is_complete, make_bank


# The state machine's tests stage unsigned banks; signatures have their own tests (test_trust.py).
class ModelBroken(BaseException):
    """An assertion of the model inside the walk's preparation step: not a candidate that fails (which the
    walk catches and moves on from), so it is no Exception."""


class PowerCut(BaseException):
    """Not an Exception: no code a power cut interrupts runs on (the walk's "failures are warnings" included)."""


class Device(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bankboot-sm-"))
        self.root = self.dir / "banks"
        self.root.mkdir()
        install_first_image(self.root)
        (self.root / "userdata").mkdir()
        (self.root / "userdata/precious").write_text("keep me")
        self.banks = Banks(str(self.root))
        self.banks.install_first("1.0.0-base")  # as `bankboot disk` does: the floors start at its version
        self.versions = 0
        self.max_tries: dict[str, int] = {}
        self.max_tries_staged: dict[str, int] = {}
        self.complete: set[str] = {"1.0.0-base"}  # images fully staged (all bytes verified)
        self.known_bad: set[str] = set()
        self.userdata_expected = "keep me"
        self.damaged: set[str] = set()  # images whose preparation fails at boot (unreadable blocks)
        self.countdown: int | None = None
        self.cut_copy: Path | None = None
        self.trial_boots: dict[str, int] = {}
        self.booted = boot(self.banks).image
        durable.before_write = self._tick

    def teardown(self) -> None:
        durable.before_write = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def _tick(self, what: str) -> None:
        if self.countdown is not None:
            if self.countdown == 0:
                self.countdown = None
                self.cuts = getattr(self, "cuts", 0) + 1
                # The disk as it is now is what survives: copy it, and put it back once the exception
                # (and whatever clean-up code it runs, which a real cut would not) has passed.
                self.cut_copy = self.dir / "at-cut"
                shutil.rmtree(self.cut_copy, ignore_errors=True)
                shutil.copytree(self.root, self.cut_copy, symlinks=True)
                raise PowerCut(what)
            self.countdown -= 1

    def _restore_cut(self) -> None:
        assert self.cut_copy is not None
        shutil.rmtree(self.root)
        os.rename(self.cut_copy, self.root)
        self.cut_copy = None

    def _run(self, cut_at: int | None, fn, *args):
        """Run one operation with the power going at durable write number cut_at; a cut means reboot."""
        self.countdown = cut_at
        try:
            return fn(*args)
        except PowerCut:
            self.countdown = None
            self._restore_cut()
            self.reboot()
            return None
        except (StateError, StageError):
            return None
        finally:
            self.countdown = None

    # -- what a device does --------------------------------------------------------------------------------
    @rule(tries=st.integers(1, 3), cut=st.one_of(st.none(), st.integers(0, 14)), corrupt=st.booleans())
    def stage_update(self, tries: int, cut: int | None, corrupt: bool) -> None:
        self.versions += 1
        payload = b"hsqs" + f"image {self.versions}".encode() * 50
        bank = self.dir / f"u{self.versions}.bank"
        image = make_bank(bank, f"2.{self.versions}.0", payload)
        if corrupt:
            data = bytearray(bank.read_bytes())
            data[1536 + 5] ^= 0xFF  # inside the squashfs payload (after two 512-byte headers and the manifest)
            bank.write_bytes(bytes(data))
        self.last_bank = (bank, image, corrupt)
        result = self._run(cut, stage, self.banks, str(bank), DEV, "9.9.9", tries, "copy", "x86_64")
        if result is not None:
            assert not corrupt, "a corrupted bank was staged"
        if os.path.isdir(self.banks.layout.image_dir(image)):
            # In place only once all of it was verified (even if the power went right after).
            assert not corrupt, "a corrupted bank reached the overlay directory"
            self.complete.add(image)
            self.max_tries[image] = tries
            self.max_tries_staged[image] = tries

    @rule()
    def retry_stage(self) -> None:
        """The same bank again, after whatever happened to the last stage (a cut anywhere in it): it is
        staged, unless the image is in use or a rollback is pending."""
        if not getattr(self, "last_bank", None) or self.last_bank[2]:
            return
        bank, image, _ = self.last_bank
        lay = self.banks.layout
        in_use = {lay.pointer(p) for p in ("current", "next", "previous")} | {self.booted}
        nxt = lay.pointer("next")
        pending = nxt is not None and self.banks.image_state(self.banks.load(), nxt).get("state") == GOOD
        try:
            stage(self.banks, str(bank), DEV, "9.9.9", 2, "copy", "x86_64", booted=self.booted)
        except StageError as e:
            assert image in in_use, f"retry of {image} refused: {e}"
            return
        except StateError as e:
            assert pending or image == lay.pointer("current"), f"retry of {image} refused: {e}"
            return
        assert lay.pointer("next") == image
        self.known_bad.discard(image)  # staged again on purpose: a new trial, which may commit
        self.max_tries[image] = self.max_tries_staged[image] = 2
        self.trial_boots[image] = 0

    @rule(cut=st.one_of(st.none(), st.integers(0, 6)), kexec=st.booleans())
    def reboot_rule(self, cut: int | None, kexec: bool) -> None:
        self.countdown = cut
        try:
            self.reboot(kexec)
        except PowerCut:
            self.countdown = None
            self._restore_cut()
            self.reboot(kexec)
        finally:
            self.countdown = None

    def reboot(self, kexec: bool = False) -> None:
        """What the init does: overlay_layout.state.walk (the policy's plan, its writes made first, then
        the candidates in order until one prepares, resets applied, a trial that fails marked bad), with a
        preparation step that fails on the images this model damaged; the boot is counted and logged."""
        banks = Banks(str(self.root))  # a new boot reads everything again

        def prepare(cand: Candidate, plan: Plan) -> Prepared:
            try:
                return check_and_prepare(cand, plan)
            except AssertionError as e:  # the model's own findings, not a candidate that fails to prepare
                raise ModelBroken(e) from e

        def check_and_prepare(cand: Candidate, plan: Plan) -> Prepared:
            entry = banks.image_state(banks.load(), cand.image)
            assert is_complete(self.root, cand.image), f"trying {cand.image}, which was never completely staged"
            if cand.trial and cand.image != pinned:
                assert entry["state"] == TRIAL and entry["tries"] >= 0
                # Each trial boot spends one try, written before the boot: never more boots than tries staged.
                assert self.trial_boots[cand.image] + entry["tries"] == self.max_tries_staged[cand.image]
            if cand.image in self.damaged:
                if cand.trial:
                    self.known_bad.add(cand.image)
                    failed_trials.append(cand.image)
                raise OSError(f"image {cand.image}: damaged")
            if not cand.trial and cand.role not in (LAST_RESORT, PINNED):  # the loader's choice, checked by it
                assert entry.get("state") == GOOD, (cand, entry)
            return {}

        def begin_boot(*args: object) -> Plan:
            """The plan's writes made: a trial's boot begins with its spent try (a cut after it, in a factory
            reset before the image is touched, is a boot of the trial that never got to run)."""
            plan = plan_boot(*args)
            for image in [e.image for e in plan.effects if e.kind == SPEND_TRY]:
                self.trial_boots[image] = self.trial_boots.get(image, 0) + 1
            return plan

        plan_boot, banks.begin_boot = banks.begin_boot, begin_boot
        pinned = None
        failed_trials: list[str] = []
        chosen = walk(banks, prepare)
        plan, booted = chosen.plan, chosen.candidate
        for image in failed_trials:  # a trial that fails to prepare is given up in the same boot
            assert banks.image_state(banks.load(), image).get("state") == BAD, image
            assert banks.layout.pointer("next") != image, image
        assert not [w for w in banks.warnings if "damaged" in w], banks.warnings  # cuts never damage a file
        assert plan.candidates, "nothing to boot"
        if booted is not None:  # anti-rollback: never an image below the boot floor, whatever the pointers say
            version = banks.snapshot().images[booted.image].version
            assert not below_floor(version, plan.boot_floor), (booted, version, plan.boot_floor)
        if booted is None:  # only when every image that may boot is damaged
            snap = banks.snapshot()
            left = [i for i, info in snap.images.items()
                    if i not in self.damaged and not (info.state == TRIAL and i != snap.next)
                    and not below_floor(info.version, snap.boot_floor)]
            assert not left, f"nothing booted, though {left} could have"
        if booted is None:
            return
        if kexec:  # the image has a kernel of its own: the second stage walks again, pinned to it
            tries = banks.image_state(banks.load(), booted.image).get("tries")
            banks = Banks(str(self.root))
            pinned = booted.image
            second = walk(banks, prepare, pinned=pinned)
            assert second.candidate is not None and second.plan.candidates[0] == second.candidate
            assert second.candidate.image == booted.image and second.candidate.trial == booted.trial
            assert banks.image_state(banks.load(), booted.image).get("tries") == tries, "a second try was spent"
        if not booted.trial and booted.role != LAST_RESORT:
            # The newest committed image that is not damaged boots (its previous when it is damaged).
            good = [c.image for c in plan.candidates if not c.trial and c.image not in self.damaged]
            assert booted.image == good[0]
        banks.record_boot(booted.image)
        remove_old_kits(banks.layout, banks.layout.images())
        assert not list(self.root.glob("overlay/*/utils/bankboot-*")), "a kit on the banks partition survived a boot"
        bootlog.append_record(str(self.root), {"image": booted.image, "trial": booted.trial})
        self.booted = booted.image
        self.banks = banks

    @rule(cut=st.one_of(st.none(), st.integers(0, 6)))
    def mark_good(self, cut: int | None) -> None:
        self._run(cut, self.banks.mark_good, self.booted)

    @rule(cut=st.one_of(st.none(), st.integers(0, 4)))
    def mark_bad(self, cut: int | None) -> None:
        nxt = self.banks.layout.pointer("next")
        if self._run(cut, self.banks.mark_bad, None, "test says so") and nxt:
            self.known_bad.add(nxt)

    @rule(cut=st.one_of(st.none(), st.integers(0, 6)))
    def rollback(self, cut: int | None) -> None:
        self._run(cut, self.banks.rollback)

    @rule(cut=st.one_of(st.none(), st.integers(0, 8)))
    def gc(self, cut: int | None) -> None:
        self._run(cut, self.banks.gc, self.booted)

    @rule(cut=st.one_of(st.none(), st.integers(0, 8)), keep=st.booleans())
    def reset(self, cut: int | None, keep: bool) -> None:
        """Request a reset, then reboot with the power going anywhere in the init's apply (then again)."""
        self._run(None, self.banks.request_reset, self.booted, keep)
        self._run(cut, self.reboot)

    @rule(cut=st.one_of(st.none(), st.integers(0, 2)))
    def boot_ok(self, cut: int | None) -> None:
        self._run(cut, self.banks.boot_ok, self.booted)

    @rule(cut=st.one_of(st.none(), st.integers(0, 1)), data=st.binary(min_size=1, max_size=64))
    def write_userdata(self, cut: int | None, data: bytes) -> None:
        """The running image writes a file to /userdata and fsyncs it; a cut before that leaves the old."""
        self.cuts = getattr(self, "cuts", 0)
        before = self.cuts
        self._run(cut, durable.write_file, str(self.root / "userdata/precious"), data)
        if self.cuts == before:
            self.userdata_expected = data.decode("latin-1")

    @rule()
    def repoint_current_below_the_floor(self) -> None:
        """Someone with the card points `current` at an image below the boot floor: the next boot skips it
        and makes the newest good image current again."""
        old = "0.1.0-planted"
        if not os.path.isdir(self.banks.layout.image_dir(old)):
            install_first_image(self.root, old)  # a signed old image copied onto the card (it verifies)
        self.complete.add(old)
        self.banks.layout.set_pointer("current", old)
        self.reboot()
        assert self.banks.layout.pointer("current") != old

    @rule()
    def plant_kit(self) -> None:
        """Someone with the card puts a bankctl kit where older builds kept one: the next boot removes it."""
        current = self.banks.layout.pointer("current") if hasattr(self, "banks") else None
        if current is not None:
            kit = Path(self.banks.layout.sub(current, "utils")) / "bankboot-planted"
            kit.mkdir(parents=True, exist_ok=True)
            (kit / "init").write_text("#!/bin/sh\necho planted\n")

    @rule(image=st.sampled_from(["current", "previous", "next"]))
    def damage(self, image: str) -> None:
        """An image's blocks go bad (the init's preflight would fail on it): a committed one, or a trial."""
        target = self.banks.layout.pointer(image)
        if target is not None:
            self.damaged.add(target)

    # -- what must always hold -------------------------------------------------------------------------------
    @invariant()
    def current_is_good_and_complete(self) -> None:
        if not hasattr(self, "banks"):
            return
        cur = self.banks.layout.pointer("current")
        assert cur is not None, "no current image"
        assert is_complete(self.root, cur), f"current {cur} was never completely staged"
        st_ = self.banks.load()
        assert self.banks.image_state(st_, cur).get("state") == GOOD, f"current {cur} is not good"
        assert cur not in self.known_bad
        Layout(str(self.root)).check_image(cur)

    @invariant()
    def tries_never_grow(self) -> None:
        if not hasattr(self, "banks"):
            return
        for image, entry in self.banks.load()["images"].items():
            if entry.get("state") == TRIAL:
                assert entry["tries"] <= self.max_tries[image]
                self.max_tries[image] = entry["tries"]

    @invariant()
    def bad_never_next_or_current(self) -> None:
        if not hasattr(self, "banks"):
            return
        st_ = self.banks.load()
        for p in ("current", "next"):
            image = self.banks.layout.pointer(p)
            if image is not None:
                assert self.banks.image_state(st_, image).get("state") != BAD, (p, image)

    @invariant()
    def userdata_is_what_was_last_fsynced(self) -> None:
        if hasattr(self, "root"):
            assert (self.root / "userdata/precious").read_bytes().decode("latin-1") == self.userdata_expected

    @invariant()
    def state_and_log_read_back_undamaged(self) -> None:
        if not hasattr(self, "root"):
            return
        banks = Banks(str(self.root))
        banks.load()
        warnings: list[str] = []
        bootlog.read_log(str(self.root), warnings)
        assert not banks.warnings and not warnings, (banks.warnings, warnings)
        if (self.root / "state.json").exists():
            check_state(json.loads((self.root / "state.json").read_text()))


TestDevice = Device.TestCase
TestDevice.settings = settings(max_examples=250, stateful_step_count=30, deadline=None)


def test_a_trial_that_is_never_marked_good_falls_back(tmp_path: Path) -> None:
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    image = make_bank(tmp_path / "u.bank", "2.0.0", b"x" * 5000)
    stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", tries=2, machine="x86_64")
    assert [boot(banks).image for _ in range(3)] == [image, image, "1.0.0-base"]
    assert banks.load()["images"][image]["state"] == BAD
    assert "no tries left" in banks.load()["images"][image]["reason"]
    assert banks.layout.pointer("next") is None


def test_commit_makes_trial_current_and_old_current_previous(tmp_path: Path) -> None:
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    image = make_bank(tmp_path / "u.bank", "2.0.0", b"y" * 5000)
    stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64")
    booted = boot(banks)
    assert booted.trial and booted.image == image
    banks.mark_good(booted.image)
    assert banks.layout.pointer("current") == image
    assert banks.layout.pointer("previous") == "1.0.0-base"
    assert banks.layout.pointer("next") is None
    banks.rollback()
    assert boot(banks).image == "1.0.0-base"
    assert banks.layout.pointer("current") == "1.0.0-base" and banks.layout.pointer("previous") == image


@pytest.mark.parametrize("damage, message", [("truncate", "truncated|not a bank"), ("flip", "does not match"),
                                             ("arch", "arm64 image; this machine is amd64")])
def test_stage_refuses_bad_banks_and_leaves_nothing(tmp_path: Path, damage: str, message: str) -> None:
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    bank = tmp_path / "u.bank"
    make_bank(bank, "2.0.0", b"z" * 50000, arch="arm64" if damage == "arch" else "amd64")
    data = bank.read_bytes()
    if damage == "truncate":
        bank.write_bytes(data[:30000])
    elif damage == "flip":
        bank.write_bytes(data[:20000] + bytes([data[20000] ^ 1]) + data[20001:])
    before = sorted(os.listdir(tmp_path / "overlay"))
    with pytest.raises(StageError, match=message):
        stage(banks, str(bank), DEV, "9.9.9", machine="x86_64")
    assert sorted(os.listdir(tmp_path / "overlay")) == before
    assert banks.layout.pointer("next") is None


def test_stage_refuses_when_the_partition_is_too_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    make_bank(tmp_path / "u.bank", "2.0.0", b"z" * 5000)
    real = os.statvfs

    class Full:
        def __init__(self, s):
            self.f_frsize, self.f_bavail = s.f_frsize, 1

    monkeypatch.setattr(os, "statvfs", lambda p: Full(real(p)))
    with pytest.raises(StageError, match="not enough space"):
        stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64")
    assert not any(n.startswith(".staging") for n in os.listdir(tmp_path / "overlay"))


def test_stage_copies_the_upper_with_whiteouts_and_xattrs(tmp_path: Path) -> None:
    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    upper = Path(banks.layout.sub("1.0.0-base", "upper"))
    (upper / "etc").mkdir()
    (upper / "etc/config").write_text("mine")
    os.mknod(upper / "etc/deleted", 0o600 | 0o020000, os.makedev(0, 0))
    os.setxattr(upper / "etc", "trusted.overlay.opaque", b"y")
    image = make_bank(tmp_path / "u.bank", "2.0.0", b"w" * 5000)
    stage(banks, str(tmp_path / "u.bank"), DEV, "9.9.9", machine="x86_64", upper="copy")
    new = Path(banks.layout.sub(image, "upper"))
    assert (new / "etc/config").read_text() == "mine"
    assert os.stat(new / "etc/deleted").st_rdev == os.makedev(0, 0)
    assert os.getxattr(new / "etc", "trusted.overlay.opaque") == b"y"
