"""The bank state machine: which image boots, trial boots with a try counter, commit, fallback.

State lives in two kinds of durable objects, each written atomically (durable.py): the pointer symlinks
(overlay/current, next, previous) and the state file (statefile.py: per-image state and tries, pending
resets, the anti-rollback floors). Every transition is a sequence of such writes ordered so that a power
cut after any of them leaves a state the next boot handles:

- an image becomes `next` only after it is complete on disk and recorded as a trial;
- a trial's try is spent (written) before it is mounted;
- `next` whose state is good means "make it current": the next boot rolls that forward, so a commit cut
  half-way finishes at the next boot, and `rollback` is the same move towards `previous`;
- `current` only ever names an image whose state is good.

What boots is decided by policy.plan_boot, a pure function of a snapshot; this module reads the snapshot
and applies the plan's writes (the effects, below), and makes the transitions bankctl asks for. The boot's
walk of the candidates is walk(), at the end (one module with Banks: every boot imports both, and each
module costs every boot); factory resets and gc are cleanup.py's, the status view is statusview.py's."""

from __future__ import annotations

import os
import time

from overlay_layout import durable, policy
from overlay_layout.errors import BankbootError, Refused
from overlay_layout.layout import DEFAULT_TRIES, POINTERS, STAGING, LayoutError
from overlay_layout.policy import BAD, GOOD, TRIAL, Candidate, Effect, ImageInfo, Plan, Snapshot
from overlay_layout.recordtype import make_record
from overlay_layout.statefile import FLOOR_FILE, STATE_FILE, StateStore, check_state, highest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from overlay_layout.records import Chosen as Chosen
    from overlay_layout.records import Prepared, StateFile, Status, Tried

    T = TypeVar("T")
    Report = Callable[[str], None]
else:
    # The walk's result. candidate: the one that prepared (None: none did); why: as the boot record says it;
    # prepared: what its preparation found; tried: the candidates that failed before it; plan: the boot's plan.
    Chosen = make_record("Chosen", "candidate why prepared tried plan")

__all__ = ["BAD", "FLOOR_FILE", "GOOD", "STATE_FILE", "TRIAL", "Banks", "Candidate", "StateError", "check_state"]


class StateError(Refused):
    """A transition that is not allowed now (exit code 3 in bankctl)."""


class Banks(StateStore):
    """One operation on the banks partition at `root`: the boot's plan and its writes, and the transitions."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        # Why an image's manifest can never verify under the keys in force (trust.KeySet.refusal), None when it
        # may: such images are no candidates at all (docs/trust.md, revocation). Set by whoever knows the keys.
        self.untrusted: Callable[[dict[str, Any]], str | None] | None = None

    # -- what boots --------------------------------------------------------------------------------------
    def snapshot(self, st: StateFile | None = None, floors: tuple[str | None, str | None] | None = None
                 ) -> Snapshot:
        """What the policy decides on; `floors` when the caller has read them (StateStore.floors)."""
        st = self.load() if st is None else st
        damaged = []
        pointers = {}
        for name in POINTERS:
            try:
                pointers[name] = self.layout.pointer(name)
            except LayoutError as e:
                self._warn(str(e))
                pointers[name] = None
                damaged.append(name)
        images = {}
        untrusted = []
        for image in self.layout.images():
            entry = self.image_state(st, image)
            m = self.manifest(image)
            why = self.untrusted(m) if self.untrusted is not None else None
            if why is not None:
                untrusted.append((image, why))
            version = m.get("version") if isinstance(m.get("version"), str) else None
            persist = m.get("persist")
            images[image] = ImageInfo(image, entry.get("state"), entry.get("tries", 0), entry.get("reason"),
                                      version, entry.get("committed", 0), m.get("confirm_boots") is True,
                                      entry.get("unconfirmed", 0),
                                      tuple(map(str, persist)) if isinstance(persist, list) else None)
        boot_floor = (self.floors(st) if floors is None else floors)[1]
        return Snapshot(pointers["current"], pointers["next"], pointers["previous"], images, tuple(damaged),
                        boot_floor, tuple(untrusted))

    def begin_boot(self, select: str | None = None,
                   unconfirmed_limit: int = policy.DEFAULT_UNCONFIRMED_LIMIT, pinned: str | None = None) -> Plan:
        """The boot's plan, with its writes made (in order) before anything is mounted. A write that fails
        (full, read-only, I/O error) does not stop the boot: it is a warning, and a trial whose try cannot
        be recorded is not booted (it could otherwise boot for ever)."""
        st = self.load()
        plan = policy.plan_boot(self.snapshot(st), select, unconfirmed_limit, pinned)
        for note in plan.notes:
            self._warn(note)
        for effect in plan.effects:
            try:
                self.apply(st, effect)
            except (OSError, LayoutError) as e:
                what = getattr(e, "strerror", None) or str(e)
                self._warn(f"cannot record '{effect.kind} {effect.image or effect.pointer or ''}' on the banks "
                           f"partition ({what}); booting with the state in memory")
                if effect.kind == policy.SPEND_TRY:
                    plan.candidates = [c for c in plan.candidates if not c.trial]
                    self._warn(f"trial of {effect.image} skipped: its try could not be recorded")
        self.repair(st)
        return plan

    # -- the plan's effects, one method each (EFFECTS maps a kind to its method) -------------------------
    def apply(self, st: StateFile, e: Effect) -> None:
        """Make one of the plan's state changes (policy.SPEND_TRY ...), written before anything is mounted."""
        how = EFFECTS.get(e.kind)
        if how is None:
            raise ValueError(f"unknown effect {e.kind}")
        if e.image is None and e.kind not in (policy.DROP_POINTER, policy.CLEAR_NEXT):
            raise ValueError(f"effect {e.kind} names no image")
        how(self, st, e)

    def _drop_pointer(self, st: StateFile, e: Effect) -> None:
        if e.pointer not in POINTERS:
            raise ValueError(f"effect {e.kind} names no pointer ({e.pointer!r})")
        durable.remove(os.path.join(self.layout.overlay, e.pointer))

    def _clear_next(self, st: StateFile, e: Effect) -> None:
        self.layout.set_pointer("next", None)

    def _roll_forward_effect(self, st: StateFile, e: Effect) -> None:
        self._roll_forward(str(e.image))

    def _mark_bad_effect(self, st: StateFile, e: Effect) -> None:
        self._mark_bad(st, str(e.image), e.reason)

    def _spend_try(self, st: StateFile, e: Effect) -> None:
        entry = st["images"][str(e.image)]
        entry["tries"] = max(0, entry.get("tries", 0) - 1)
        self.save(st)

    def _demote(self, st: StateFile, e: Effect) -> None:
        # The bad state first: a cut before the pointers move leaves current bad, which demotes again.
        image, lay = str(e.image), self.layout
        cur, prev = lay.pointer("current"), lay.pointer("previous")
        st["images"][image] = {**st["images"].get(image, {}), "state": BAD, "reason": e.reason, "unconfirmed": 0}
        if prev is not None:
            st["images"][prev] = {**st["images"].get(prev, {}), "state": GOOD, "unconfirmed": 0}
        self.save(st)
        if prev is not None and cur == image:
            lay.set_pointer("current", prev)
            lay.set_pointer("previous", image)

    def _repoint_current(self, st: StateFile, e: Effect) -> None:
        self.layout.set_pointer("current", e.image)

    # -- what the boot and the running image record ------------------------------------------------------
    def _roll_forward(self, nxt: str) -> None:
        """Make a good `next` current: previous <- current, current <- next, next removed."""
        cur = self.read_pointer("current")
        if cur is not None and cur != nxt:
            self.layout.set_pointer("previous", cur)
        self.layout.set_pointer("current", nxt)
        self.layout.set_pointer("next", None)

    def trial_failed(self, image: str, reason: str) -> None:
        """The init gave up a trial in this boot (self-test, verification, mount): it is bad now."""
        st = self.load()
        if self.image_state(st, image).get("state") == TRIAL:
            self._mark_bad(st, image, reason)

    def record_boot(self, image: str) -> int | None:
        """Count a boot of a committed image that asks for confirmation (`bankctl boot-ok` zeroes it);
        written before the hand-over, so an image whose init dies is counted too. Returns the count."""
        if self.manifest(image).get("confirm_boots") is not True:
            return None
        st = self.load()
        entry = st["images"].setdefault(image, self.image_state(st, image).copy())
        entry["unconfirmed"] = entry.get("unconfirmed", 0) + 1
        self.save(st)
        return entry["unconfirmed"]

    def boot_ok(self, booted: str | None) -> str:
        """The running image is up: its unconfirmed-boot count goes back to zero."""
        image = booted or self.read_pointer("current")
        if image is None:
            raise StateError("no running image to confirm")
        st = self.load()
        entry = st["images"].get(image)
        if entry is not None and entry.get("unconfirmed"):
            entry["unconfirmed"] = 0
            self.save(st)
        return image

    # -- transitions bankctl asks for --------------------------------------------------------------------
    def add_trial(self, image: str, tries: int = DEFAULT_TRIES) -> None:
        """After the image is complete on disk: record it as a trial, then make it `next`."""
        if tries < 1:
            raise StateError(f"tries must be at least 1, not {tries}")
        if not os.path.isdir(self.layout.image_dir(image)):
            raise StateError(f"image {image} is not on the banks partition")
        if image == self.read_pointer("current"):
            raise StateError(f"image {image} is already current")
        st = self.load()
        self.refuse_if_rollback_pending(st)
        st["images"][image] = {"state": TRIAL, "tries": tries, "staged": int(time.time())}
        self.save(st)
        self.layout.set_pointer("next", image)

    def refuse_if_rollback_pending(self, st: StateFile | None = None) -> None:
        """`next` that is good is a commit or rollback the next boot finishes; staging would cancel it."""
        nxt = self.read_pointer("next")
        if nxt is not None and self.image_state(self.load() if st is None else st, nxt).get("state") == GOOD:
            raise StateError(f"a switch to {nxt} (a rollback, or a commit) is pending and finishes at the next "
                             f"boot: reboot first, then stage")

    def mark_good(self, booted: str | None) -> str:
        """The running trial is healthy: commit it (it becomes current, current becomes previous)."""
        st = self.load()
        nxt = self.read_pointer("next")
        if nxt is None or self.image_state(st, nxt).get("state") != TRIAL:
            cur = self.read_pointer("current")
            if booted is not None and booted == cur:
                return cur  # already committed: mark-good is idempotent
            raise StateError("no image is on trial")
        if booted is not None and booted != nxt:
            raise StateError(f"the running image is {booted}, not the trial {nxt}: boot the trial first")
        st["images"][nxt] = {**st["images"].get(nxt, {}), "state": GOOD, "tries": 0, "unconfirmed": 0,
                             "committed": int(time.time())}
        self._raise_floor(st, nxt)
        self.save(st)
        self._roll_forward(nxt)
        return nxt

    def _raise_floor(self, st: StateFile, image: str) -> None:
        """Anti-rollback: committing an image raises the stage floor to its version and the boot floor to the
        older of it and the outgoing current (which stays bootable as `previous`); neither is lowered."""
        floor, boot = self.floors(st)
        new, outgoing = self._version(image), self._version(self.read_pointer("current"))
        if outgoing is None and self.read_pointer("current") not in (None, image):
            oldest = None  # the outgoing image's version cannot be read: do not make it unbootable
        else:
            oldest = min((v for v in (new, outgoing) if v), key=policy.version_key, default=None)
        self.set_floors(st, highest(floor, new), highest(boot, oldest))

    def lower_boot_floor(self, st: StateFile, version: str) -> None:
        """A downgrade the initramfs allows (stage --allow-downgrade): that version may boot."""
        floor, boot = self.floors(st)
        if boot is not None and policy.version_key(version) < policy.version_key(boot):
            self.set_floors(st, floor, version)
            self.save(st)

    def _mark_bad(self, st: StateFile, image: str, reason: str) -> None:
        st["images"][image] = {**st["images"].get(image, {}), "state": BAD, "tries": 0, "reason": reason}
        self.save(st)
        if self.read_pointer("next") == image:
            self.layout.set_pointer("next", None)

    def mark_bad(self, image: str | None, reason: str) -> str:
        """Give up a trial now (bankctl mark-bad)."""
        st = self.load()
        nxt = self.read_pointer("next")
        image = image or nxt
        if image is None or self.image_state(st, image).get("state") != TRIAL:
            raise StateError("no image is on trial")
        if image == self.read_pointer("current"):
            raise StateError(f"{image} is current and cannot be marked bad")
        self._mark_bad(st, image, reason)
        return image

    def rollback(self) -> str:
        """Boot `previous` next time; once it has booted it is current again."""
        prev = self.read_pointer("previous")
        if prev is None:
            raise StateError("there is no previous image to roll back to")
        st = self.load()
        if self.image_state(st, prev).get("state") == BAD:
            raise StateError(f"previous image {prev} is marked bad")
        refused = self.untrusted(self.manifest(prev)) if self.untrusted is not None else None
        if refused is not None:
            raise StateError(f"previous image {prev} is {refused}: it would not boot")
        boot_floor = self.floors(st)[1]
        if policy.below_floor(self._version(prev), boot_floor):
            raise StateError(f"previous image {prev} (version {self._version(prev) or 'unknown'}) is below the "
                             f"anti-rollback floor {boot_floor}: it would not boot")
        nxt = self.read_pointer("next")
        if nxt is not None and self.image_state(st, nxt).get("state") == TRIAL:
            self._mark_bad(st, nxt, "superseded by a rollback")
        st["images"][prev] = {**st["images"].get(prev, {}), "state": GOOD}
        self.save(st)
        self.layout.set_pointer("next", prev)
        return prev

    # -- factory resets and gc (cleanup.py), the status view (statusview.py) -----------------------------
    def request_reset(self, image: str, keep_backup: bool) -> None:
        """Factory reset of `image`'s upper at its next boot (the upper is in use while it runs)."""
        from overlay_layout import cleanup

        cleanup.request_reset(self, image, keep_backup)

    def apply_reset(self, image: str) -> str | None:
        """At boot, before mounting `image`: its requested reset, if any (cleanup.apply_reset). cleanup.py is
        imported only when one is pending: every boot runs this, and a module more costs every boot."""
        if image not in self.load()["reset"]:
            return None
        from overlay_layout import cleanup

        return cleanup.apply_reset(self, image)

    def gc(self, booted: str | None) -> list[str]:
        """Images no pointer names and unfinished stages and downloads, removed (cleanup.gc)."""
        from overlay_layout import cleanup

        return cleanup.gc(self, booted)

    def remove_staging_leftovers(self) -> list[str]:
        """What writes cut by a power loss left behind: `.staging-*` directories and durable.write_file's
        temp files (never in use: bankctl holds the banks lock while it writes, and the init runs before
        any bankctl). Here, not in cleanup.py: every boot runs it, and a module more costs every boot."""
        removed = []
        for d in (self.layout.overlay, self.layout.root):
            names = os.listdir(d) if os.path.isdir(d) else []
            gone = [n for n in names if n.startswith(STAGING) or durable.is_temp_name(n)]
            for name in gone:
                durable.remove_tree(os.path.join(d, name))
            if gone:
                durable.fsync_dir(d)
            removed += gone
        return removed

    def status(self, unconfirmed_limit: int = policy.DEFAULT_UNCONFIRMED_LIMIT) -> Status:
        """What `bankctl status` prints and the console menu offers (statusview.status)."""
        from overlay_layout.statusview import status

        return status(self, unconfirmed_limit)


EFFECTS: dict[str, Callable[[Banks, StateFile, Effect], None]] = {
    policy.DROP_POINTER: Banks._drop_pointer, policy.CLEAR_NEXT: Banks._clear_next,
    policy.ROLL_FORWARD: Banks._roll_forward_effect, policy.MARK_BAD: Banks._mark_bad_effect,
    policy.SPEND_TRY: Banks._spend_try, policy.DEMOTE: Banks._demote, policy.REPOINT_CURRENT: Banks._repoint_current,
}


# --- the boot's candidate walk: plan the boot (its writes made first), then try the candidates in order until
# one prepares. Between the plan and the hand-over this is the whole state machine of a boot: a factory
# reset is applied before its image is touched, a trial that fails to prepare is marked bad at once, and a
# kexec's second stage tries only the image its loader chose (the loader falls back, not the second stage).
#
# What "prepare" means (mount, verify, preflight, self-test) is the caller's: the init passes its mounting
# step (initfs/bootflow.py), the hypothesis model a step that fails for the images it damaged. Both run this
# one walk, so the model checks the walk the init runs.


class CannotBoot(BankbootError):
    """What a preparation step raises to name the kind of failure ("self-test failed"); any other exception
    is "cannot boot it". `cause` is the failure itself."""

    def __init__(self, kind: str, cause: BaseException) -> None:
        super().__init__(f"{kind}: {cause}")
        self.kind, self.cause = kind, cause


def _silent(text: str) -> None:
    pass


def quietly(report: Report, what: str, fn: Callable[..., T], *args: Any) -> T | None:
    """A write to the banks partition that must not stop the boot: a failure is reported, and None."""
    try:
        return fn(*args)
    except Exception as e:
        report(f"{what} failed ({getattr(e, 'strerror', None) or e}); booting on")
        return None


def walk(banks: Banks, prepare: Callable[[Candidate, Plan], Prepared], select: str | None = None,
         how: str = "", unconfirmed_limit: int = policy.DEFAULT_UNCONFIRMED_LIMIT, pinned: str | None = None,
         release: Callable[[str], None] | None = None, log: Report = _silent, error: Report = _silent) -> Chosen:
    """The boot's plan (begin_boot: its writes made) and its candidates tried in order with `prepare`, which
    raises when one cannot boot; `release` undoes a failed preparation. `select`/`how`: a one-boot choice and
    who made it; `pinned`: the image a kexec's loader chose (this is its second stage). `log` and `error`
    report progress and warnings (the console and the boot log)."""
    plan = banks.begin_boot(select, unconfirmed_limit, pinned)
    for w in banks.warnings:
        error(w)
    tried: list[Tried] = []
    for cand in plan.candidates:
        why = f"{how}: {cand.why}" if cand.role == policy.SELECTED else cand.why
        log(f"booting image {cand.image} ({why})")
        seen = len(banks.warnings)
        done = quietly(error, f"factory reset of {cand.image}", banks.apply_reset, cand.image)
        for w in banks.warnings[seen:]:  # a planted symlink the reset replaced
            error(w)
        if done:
            log(f"{cand.image}: {done}")
        try:
            prepared = prepare(cand, plan)
        except Exception as e:
            kind, cause = (e.kind, e.cause) if isinstance(e, CannotBoot) else ("cannot boot it", e)
            reason = f"{kind}: {str(cause).removeprefix(f'image {cand.image}: ')}"
            error(f"image {cand.image}: {reason}")
            if release is not None:
                release(cand.image)
            tried.append({"image": cand.image, "why": why, "error": reason})
            if cand.trial:
                quietly(error, f"marking {cand.image} bad", banks.trial_failed, cand.image,
                        f"trial boot failed: {reason}")
            if pinned is not None:  # the second stage boots one image; the loader picks the next
                break
            continue
        return Chosen(cand, why, prepared, tried, plan)
    return Chosen(None, "", {}, tried, plan)
