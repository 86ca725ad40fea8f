"""Key rotation under hypothesis, with a power cut before any durable write.

The model is a publisher and a device. The publisher rotates its keys (adds a key, retires one, changes
the threshold), each rotation a key update signed by the keys before and after it, and every release
carries the whole chain. The device stages releases, boots (the init's sequence: keys in force, the plan,
each candidate verified against those keys), commits (mark-good, then the trust file) and rolls back; the
power may go at any durable write of any of these, and someone with the card may delete or garble the
trust file or point `current` at an old image signed only by a retired key. A power cut is a real one: the
partition goes back to what it was at the cut (test_state_machine.py's method).

After every boot: something boots (a rotation never bricks the device); what boots verifies under the keys
in force; the keys in force never fall behind what was committed and never run ahead of it (a trial's key
update counts only once it commits); no image the keys in force cannot verify is a candidate, not even a
last resort (revocation)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from initfs import VERSION
from overlay_layout import durable, ed25519
from overlay_layout.keychain import TRUST_FILE, new_update, parse_chain, same_update, sign_update
from overlay_layout.manifest import parse_manifest
from overlay_layout.stage import StageError, stage
from overlay_layout.state import Banks, StateError
from overlay_layout.trust import KeySet, Policy, TrustError, boot_keys, key_id
from tests.banks import boot, make_bank

SEEDS = [hashlib.sha256(b"rotation model key %d" % i).digest() for i in range(6)]
PUBLIC = [ed25519.keypair(s)[0] for s in SEEDS]
IDS = [key_id(p) for p in PUBLIC]


class PowerCut(Exception):
    pass


class RotatingDevice(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        # In memory where there is a tmpfs: a cut is simulated by copying the tree, fsync only costs time here.
        self.dir = Path(tempfile.mkdtemp(prefix="bankboot-rot-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        self.root = self.dir / "banks"
        (self.root / "overlay").mkdir(parents=True)
        self.policy = Policy({IDS[0]: PUBLIC[0]}, allow_unsigned=False, allow_downgrade=True)
        self.chain: list[dict] = []  # the publisher's
        self.sets = [KeySet({IDS[0]: PUBLIC[0]})]  # the publisher's sets, root first
        self.used = {0}  # keys any set has held
        self.versions = 0
        self.countdown: int | None = None
        self.cut_copy: Path | None = None
        self.seen_serial = 0  # the keys in force at the last boot
        self.committed_max = 0  # the longest chain an image that was current carries
        self.old_image: str | None = None  # the first image: signed by key 0 only
        # The first image, as a device leaves the factory: staged and committed under the root key.
        bank = self.dir / "first.bank"
        self.old_image = make_bank(bank, "1.0.0", b"first image", seeds=(SEEDS[0],))
        self.old_bank = bank
        banks = Banks(str(self.root))
        stage(banks, str(bank), self.policy, VERSION, machine="x86_64")
        boot(banks)
        banks.mark_good(self.old_image)
        self.booted = self.old_image
        durable.before_write = self._tick
        self.boot()

    def teardown(self) -> None:
        durable.before_write = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- power cuts (as in test_state_machine.py) -------------------------------------------------------------
    def _tick(self, what: str) -> None:
        if self.countdown is not None:
            if self.countdown == 0:
                self.countdown = None
                event(f"power cut: {what.split()[0]} {os.path.basename(what.split()[1]) if ' ' in what else ''}")
                self.cut_copy = self.dir / "at-cut"
                shutil.rmtree(self.cut_copy, ignore_errors=True)
                shutil.copytree(self.root, self.cut_copy, symlinks=True)
                raise PowerCut(what)
            self.countdown -= 1

    def _run(self, cut: int | None, fn, *args):
        self.countdown = cut
        try:
            return fn(*args)
        except PowerCut:
            self.countdown = None
            assert self.cut_copy is not None
            shutil.rmtree(self.root)
            os.rename(self.cut_copy, self.root)
            self.boot_after_cut()
            return None
        except (StateError, StageError):
            return None
        finally:
            self.countdown = None

    def boot_after_cut(self) -> None:
        """The boot after a cut may be cut too; it ends in a whole boot."""
        self.boot()

    # -- the publisher -----------------------------------------------------------------------------------------
    @rule(add=st.booleans(), retire=st.booleans(), two=st.booleans())
    def publish_key_update(self, add: bool, retire: bool, two: bool) -> None:
        if len(self.chain) >= 4:
            return
        prev = self.sets[-1]
        keys = dict(prev.keys)
        if add and len(self.used) < len(SEEDS):
            n = len(self.used)
            self.used.add(n)
            keys[IDS[n]] = PUBLIC[n]
        if retire and len(keys) > 1:
            del keys[sorted(keys, key=IDS.index)[0]]
        threshold = min(2 if two else 1, len(keys))
        u = new_update(len(self.chain) + 1, keys, threshold)
        for kid in sorted(set(prev.keys) | set(keys)):
            u = sign_update(u, SEEDS[IDS.index(kid)])
        self.chain.append(u)
        self.sets.append(KeySet(keys, threshold, len(self.chain)))

    def release(self, chain: list[dict] | None = None, signers: list[int] | None = None) -> tuple[Path, str]:
        """A release signed by every key the publisher ever used (so it verifies under whatever set a device
        is at) and carrying the chain."""
        self.versions += 1
        bank = self.dir / f"r{self.versions}.bank"
        seeds = tuple(SEEDS[i] for i in sorted(self.used if signers is None else signers))
        image = make_bank(bank, f"2.{self.versions}.0", b"release %d" % self.versions, seeds=seeds,
                          key_updates=(self.chain if chain is None else chain) or None)
        return bank, image

    # -- the device --------------------------------------------------------------------------------------------
    @rule(cut=st.one_of(st.none(), st.integers(0, 12)))
    def stage_release(self, cut: int | None) -> None:
        bank, _ = self.release()
        self._run(cut, stage, Banks(str(self.root)), str(bank), self.policy, VERSION, 3, "copy", "x86_64",
                  None, True, 0, self.booted)

    @rule(rotate=st.booleans(), retire=st.booleans(), cuts=st.lists(st.one_of(st.none(), st.integers(0, 10)),
                                                                   min_size=3, max_size=3))
    def update_cycle(self, rotate: bool, retire: bool, cuts: list[int | None]) -> None:
        """What a fleet does most: (maybe) a rotation, a release, its trial boot and its commit, the power
        going anywhere in each of the three."""
        from overlay_layout.keychain import commit

        if rotate:
            self.publish_key_update(True, retire, False)
        bank, _ = self.release()
        self._run(cuts[0], stage, Banks(str(self.root)), str(bank), self.policy, VERSION, 3, "copy", "x86_64",
                  None, True, 0, self.booted)
        self.reboot(cuts[1])
        self._run(cuts[2], commit, Banks(str(self.root)), self.policy, self.booted)
        self.note_committed()

    @rule()
    def stage_release_signed_only_by_a_retired_key(self) -> None:
        keys = self.policy.in_force(Banks(str(self.root)))
        if not keys.retired:
            return
        kid = sorted(keys.retired)[0]
        bank, _ = self.release(signers=[IDS.index(kid)])
        before = self.listing()
        try:
            stage(Banks(str(self.root)), str(bank), self.policy, VERSION, machine="x86_64", booted=self.booted)
        except StateError:
            return
        except StageError as e:
            assert kid in str(e) and "retired" in str(e), e
            event("refused: signed only by a retired key")
        else:
            raise AssertionError("a bank signed only by a retired key was staged")
        assert self.listing() == before  # nothing new (what a cut stage left may be cleared, as every stage does)

    def listing(self) -> list[str]:
        return sorted(n for n in os.listdir(self.root / "overlay") if not n.startswith(".staging-"))

    @rule()
    def stage_a_racing_key_update(self) -> None:
        """A release whose key update N differs from the key update N in force: refused, nothing changed."""
        keys = self.policy.in_force(Banks(str(self.root)))
        if not keys.serial:
            return
        other = new_update(keys.serial, {IDS[5]: PUBLIC[5]}, 1)
        if same_update(other, keys.chain[-1]):
            return
        for i in range(6):
            other = sign_update(other, SEEDS[i])
        bank, _ = self.release(chain=[*keys.chain[:-1], other])
        try:
            stage(Banks(str(self.root)), str(bank), self.policy, VERSION, machine="x86_64", booted=self.booted)
        except StateError:
            return  # a rollback is pending: nothing is staged before the next boot
        except StageError as e:
            assert "two key updates with one serial" in str(e), e
            event("refused: a racing key update")
        else:
            raise AssertionError("a second key update with the same serial was staged")

    @rule(cut=st.one_of(st.none(), st.integers(0, 8)))
    def reboot(self, cut: int | None) -> None:
        self.countdown = cut
        try:
            self.boot()
        except PowerCut:
            self.countdown = None
            assert self.cut_copy is not None
            shutil.rmtree(self.root)
            os.rename(self.cut_copy, self.root)
            self.boot()
        finally:
            self.countdown = None

    @rule(cut=st.one_of(st.none(), st.integers(0, 8)))
    def mark_good(self, cut: int | None) -> None:
        from overlay_layout.keychain import commit

        self._run(cut, commit, Banks(str(self.root)), self.policy, self.booted)
        self.note_committed()

    def note_committed(self) -> None:
        """The longest chain an image that was committed carries (current, or a good next the next boot rolls
        forward): the keys in force may never go further."""
        banks = Banks(str(self.root))
        for name in ("current", "next"):
            image = banks.layout.pointer(name)
            if image and banks.image_state(banks.load(), image).get("state") == "good":
                self.committed_max = max(self.committed_max, len(banks.manifest(image).get("key_updates") or []))

    @rule(cut=st.one_of(st.none(), st.integers(0, 4)))
    def rollback(self, cut: int | None) -> None:
        banks = Banks(str(self.root))
        keys = self.policy.in_force(banks)
        banks.untrusted = keys.refusal
        prev = banks.layout.pointer("previous")
        self._run(cut, banks.rollback)
        if prev is not None and keys.refusal(banks.manifest(prev)):
            assert banks.layout.pointer("next") != prev, "rollback to an image the keys in force refuse"

    # -- someone with the card --------------------------------------------------------------------------------
    @rule(garble=st.booleans())
    def attack_the_trust_file(self, garble: bool) -> None:
        path = self.root / TRUST_FILE
        if garble:
            path.write_bytes(b'{"format": 1, "updates": [{"serial": 1, "keys": {}}]}')
        else:
            path.unlink(missing_ok=True)
        # The keys then come back from the committed images' chains: what they carry is the new floor.
        self.seen_serial = self.committed_chain()
        self.boot()

    def committed_chain(self) -> int:
        """The longest chain a committed image on the partition carries (good in the state file, or current
        or previous)."""
        banks = Banks(str(self.root))
        st = banks.load()
        good = [i for i in banks.layout.images() if banks.image_state(st, i).get("state") == "good"]
        return max([0] + [len(banks.manifest(i).get("key_updates") or []) for i in good])

    @rule()
    def point_current_at_the_first_image(self) -> None:
        """The factory image (signed by key 0 only), copied back and made current: it boots only while key 0
        is trusted."""
        lay = Banks(str(self.root)).layout
        if not os.path.isdir(lay.image_dir(self.old_image)):
            stage_dir = self.dir / "plant"
            shutil.rmtree(stage_dir, ignore_errors=True)
            tmp = Banks(str(stage_dir))
            (stage_dir / "overlay").mkdir(parents=True)
            stage(tmp, str(self.old_bank), Policy({IDS[0]: PUBLIC[0]}, False, True), VERSION, machine="x86_64")
            shutil.copytree(tmp.layout.image_dir(self.old_image), lay.image_dir(self.old_image), symlinks=True)
        lay.set_pointer("current", self.old_image)
        lay.set_pointer("previous", self.old_image)  # and no pointer left at the image that rotated
        (self.root / TRUST_FILE).unlink(missing_ok=True)
        self.seen_serial = self.committed_chain()
        self.boot()

    # -- the init ----------------------------------------------------------------------------------------------
    def boot(self) -> None:
        banks = Banks(str(self.root))
        keys = boot_keys(banks, self.policy)
        plan = banks.begin_boot()
        for cand in plan.candidates:  # revocation: nothing the keys in force cannot verify is even tried
            assert keys.refusal(banks.manifest(cand.image)) is None, (cand, keys.describe())
        booted = None
        for cand in plan.candidates:
            with open(banks.layout.manifest_path(cand.image), "rb") as f:
                manifest = parse_manifest(f.read(), cand.image)
            try:
                self.policy.check(manifest, VERSION, keys)
            except TrustError:
                if cand.trial:
                    banks.trial_failed(cand.image, "verification failed")
                continue
            booted = cand
            break
        assert booted is not None, f"nothing boots: {plan.candidates}, keys {keys.describe()}, {banks.warnings}"
        self.note_committed()
        assert keys.serial >= self.seen_serial, f"the keys in force went back from {self.seen_serial} to {keys.serial}"
        assert keys.serial <= self.committed_max, f"key update {keys.serial} is in force but was never committed"
        parse_chain(list(keys.chain), "keys in force")
        event(f"boot with key update {keys.serial} in force" + (", a key retired" if keys.retired else ""))
        if keys.serial > self.seen_serial:
            event("a key update came into force")
        self.seen_serial = keys.serial
        self.booted = booted.image


TestRotatingDevice = RotatingDevice.TestCase
TestRotatingDevice.settings = settings(max_examples=200, stateful_step_count=20, deadline=None)
