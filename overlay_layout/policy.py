"""The boot policy: from a snapshot of the banks partition (pointers, per-image state, manifests) to the
ordered list of images to try this boot, each with its reason, and the state changes that choice makes.

It is a pure function so that the init, `bankctl status` and the console menu cannot disagree about what
boots, and so that the hypothesis model can run it on any state, damaged ones included. The order is:

1. a one-boot selection (bankboot.select= or the console menu);
2. the trial (`next` with tries left: one try is spent, written before the image is touched);
3. `current`;
4. `previous`;
5. other good images, newest first;
6. as a last resort, every other image on the partition (marked bad, or whose state was lost): a device
   that boots a doubtful image can still be updated; one that stops at a shell needs a truck roll.

No image whose version is below the boot floor is ever a candidate (anti-rollback, docs/trust.md): the
boot floor is the version of the image that was current when the newest one was committed, so `previous`
stays reachable (bankctl rollback, ESC) and nothing older is. A `current` pointer that names an image
below it (re-pointed by someone with the card) is replaced by the newest good image. Nor is an image the
keys in force can never verify (signed only by retired or unknown keys; the snapshot's `untrusted`), not
even as a last resort: revoking a key must hold against whoever holds it and can also break the others.

The init walks that list; any failure preparing a candidate (mount, verity, signature, preflight,
self-test, a write) moves to the next one."""

from __future__ import annotations

from overlay_layout.contract import DEFAULT_UNCONFIRMED_BOOTS
from overlay_layout.layout import POINTERS
from overlay_layout.recordtype import make_record

DEFAULT_UNCONFIRMED_LIMIT = DEFAULT_UNCONFIRMED_BOOTS


# Records are plain tuple records (recordtype.py; no dataclasses, typing.NamedTuple or collections): dataclasses
# brings inspect and typing costs a quarter of a second to import on qemu-aarch64 under TCG, paid by the
# init before it boots. The
# type checker sees their typed twins in records.py (documented there; tests/unit/test_records.py keeps
# the two the same).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Set as AbstractSet

    from overlay_layout.records import Candidate as Candidate
    from overlay_layout.records import Effect as Effect
    from overlay_layout.records import EffectKind, Role, State
    from overlay_layout.records import ImageInfo as ImageInfo
    from overlay_layout.records import Snapshot as Snapshot
else:
    ImageInfo = make_record("ImageInfo", "id state tries reason version committed confirm unconfirmed persist",
                            defaults=(None, 0, None, None, 0, False, 0, None))
    Snapshot = make_record("Snapshot", "current next previous images damaged boot_floor untrusted",
                           defaults=((), None, ()))
    Candidate = make_record("Candidate", "image why trial role", defaults=(False, "current"))
    Effect = make_record("Effect", "kind image reason pointer", defaults=(None, "", None))


GOOD: State = "good"
TRIAL: State = "trial"
BAD: State = "bad"

# Why an image is a candidate (Candidate.role): the walk and the model decide on these, people read `why`.
SELECTED: Role = "selected"  # a one-boot choice (bankboot.select=, the console menu)
ON_TRIAL: Role = "trial"  # next, spending one of its tries
PINNED: Role = "pinned"  # a kexec's second stage: the loader chose it
CURRENT: Role = "current"
PREVIOUS: Role = "previous"
OTHER_GOOD: Role = "good"  # another good image, newest first
LAST_RESORT: Role = "last_resort"  # bad, or of unknown state: a doubtful image beats a truck roll

# The state changes a plan makes (Effect.kind), applied in order by state.Banks.begin_boot.
SPEND_TRY: EffectKind = "spend_try"
MARK_BAD: EffectKind = "mark_bad"
CLEAR_NEXT: EffectKind = "clear_next"
ROLL_FORWARD: EffectKind = "roll_forward"
DEMOTE: EffectKind = "demote"
REPOINT_CURRENT: EffectKind = "repoint_current"
DROP_POINTER: EffectKind = "drop_pointer"  # Effect.pointer: a pointer that is damaged or names no image


class Plan:
    """The boot's candidates in order, the state changes to make first, and notes (warnings for the
    console, the boot log and status); boot_floor is what the candidates were checked against."""

    def __init__(self, boot_floor: str | None = None) -> None:
        self.candidates: list[Candidate] = []
        self.effects: list[Effect] = []
        self.notes: list[str] = []
        self.boot_floor = boot_floor


def version_key(version: str | None) -> tuple[object, ...]:
    """Sort key for "newest first": trust.py's semantic-version order; anything else sorts lowest."""
    from overlay_layout.trust import TrustError, parse_version

    try:
        return (1, *parse_version(version or ""))
    except TrustError:
        return (0,)


def below_floor(version: str | None, boot_floor: str | None) -> bool:
    """An image of this version may not boot: below the floor, or a version that cannot be compared."""
    return boot_floor is not None and version_key(version) < version_key(boot_floor)


def _state(snap: Snapshot, image: str | None) -> str | None:
    if image is None or image not in snap.images:
        return None
    return snap.images[image].state


class _Boot:
    """One plan in the making: the pointers as this boot will treat them (None: not usable), the images that
    never boot (`low`: below the floor or untrusted), the trial, and those marked bad by this plan."""

    def __init__(self, snap: Snapshot, plan: Plan) -> None:
        self.snap, self.plan = snap, plan
        self.cur, self.nxt, self.prev = snap.current, snap.next, snap.previous
        self.low = {i for i, v in snap.images.items() if below_floor(v.version, snap.boot_floor)}
        self.untrusted = dict(snap.untrusted)
        self.trial: Candidate | None = None
        self.bad_now: set[str] = set()  # marked bad by this plan: a last resort like any bad image

    def effect(self, kind: EffectKind, image: str | None = None, reason: str = "", pointer: str | None = None
               ) -> None:
        self.plan.effects.append(Effect(kind, image, reason, pointer))

    def note(self, text: str) -> None:
        self.plan.notes.append(text)

    def pointers(self) -> tuple[tuple[str, str | None], ...]:
        return ("current", self.cur), ("next", self.nxt), ("previous", self.prev)


def plan_boot(snap: Snapshot, select: str | None = None,
              unconfirmed_limit: int = DEFAULT_UNCONFIRMED_LIMIT, pinned: str | None = None) -> Plan:
    """`pinned`: the second stage of a kexec (bankboot.kexec=): the loader already planned this boot and
    spent the trial's try, so that image comes first and nothing is spent again."""
    plan = Plan(boot_floor=snap.boot_floor)
    b = _Boot(snap, plan)
    _usable_pointers(b)
    pinned = _check_pinned(b, pinned)
    if pinned is not None:
        select = None  # the person's choice was made in the loader's menu
    _settle_next(b, pinned)
    _settle_current(b, unconfirmed_limit)
    _order(b, select, pinned)
    return plan


def _usable_pointers(b: _Boot) -> None:
    """Pointers that are damaged or name no image are dropped, `next` equal to `current` cleared; one that
    names an image which never boots is not followed (a trial there is marked bad)."""
    snap = b.snap
    for name in snap.damaged:
        b.effect(DROP_POINTER, pointer=name)
    for name, image in b.pointers():
        if image is not None and image not in snap.images:
            b.note(f"{name} points at {image}, which is not on the banks partition")
            b.effect(DROP_POINTER, pointer=name)
    b.cur = b.cur if b.cur in snap.images else None
    b.nxt = b.nxt if b.nxt in snap.images else None
    b.prev = b.prev if b.prev in snap.images else None
    if b.nxt is not None and b.nxt == b.cur:
        b.effect(CLEAR_NEXT)
        b.nxt = None
    for name, image in b.pointers():
        if image in b.untrusted:
            b.note(f"{name} points at {image}, which is {b.untrusted[image]}: it is not booted")
        elif image in b.low:
            b.note(f"{name} points at {image} (version {snap.images[image].version or 'unknown'}), below "
                   f"the anti-rollback floor {snap.boot_floor}: it is not booted")
    b.low |= set(b.untrusted) & set(snap.images)  # never a candidate, not even a last resort (docs/trust.md)
    if b.nxt in b.low:
        if _state(snap, b.nxt) == TRIAL:
            b.effect(MARK_BAD, b.nxt, b.untrusted.get(b.nxt) or f"below the anti-rollback floor {snap.boot_floor}")
        else:
            b.effect(CLEAR_NEXT)
        b.nxt = None
    if b.cur in b.low:
        b.cur = None
    if b.prev in b.low:
        b.prev = None


def _check_pinned(b: _Boot, pinned: str | None) -> str | None:
    """The image a kexec's loader chose, when it may boot. A bad image too: the loader boots one as a last
    resort, and the second stage must boot what the loader chose (anything else would reboot to the loader,
    which would choose it again)."""
    if pinned is not None and (pinned not in b.snap.images or pinned in b.low):
        b.note(f"bankboot.kexec={pinned} ignored: not an image on the banks partition at or above the "
               f"anti-rollback floor and signed by the keys in force")
        return None
    return pinned


def _settle_next(b: _Boot, pinned: str | None) -> None:
    """`next` first: a committed one (or a rollback) rolls forward, a trial with tries left is this boot's
    trial, a spent trial is given up."""
    nxt = b.nxt
    if nxt is None:
        return
    info = b.snap.images[nxt]
    if info.state == GOOD:
        b.effect(ROLL_FORWARD, nxt)
        if b.cur is not None and b.cur != nxt:
            b.prev = b.cur
        b.cur, b.nxt = nxt, None
    elif info.state == TRIAL and nxt == pinned:
        b.trial = Candidate(nxt, f"trial of next, on its own kernel ({info.tries} tries left after this one)",
                            True, ON_TRIAL)
    elif info.state == TRIAL and info.tries > 0:
        b.trial = Candidate(nxt, f"trial of next ({info.tries - 1} tries left after this one)", True, ON_TRIAL)
    elif info.state == TRIAL:
        b.effect(MARK_BAD, nxt, "trial never marked good: no tries left")
        b.note(f"next {nxt} used up its tries without being marked good; it is marked bad")
        b.bad_now.add(nxt)
        b.nxt = None
    else:
        b.effect(CLEAR_NEXT)
        b.note(f"next {nxt} is {info.state or 'of unknown state'}; it is not booted")
        b.nxt = None


def _settle_current(b: _Boot, unconfirmed_limit: int) -> None:
    """`current` must be good; one that is bad, or that never confirmed its boots, gives way to previous; with
    none usable, the newest good image becomes current."""
    cur, prev = b.cur, b.prev
    if cur is not None:
        info = b.snap.images[cur]
        prev_ok = prev is not None and prev != cur and _state(b.snap, prev) != BAD
        reason = None
        if info.state == BAD and prev_ok:
            reason = info.reason or "marked bad"
            b.note(f"current {cur} is marked bad ({info.reason}); previous {prev} becomes current")
        elif info.confirm and info.unconfirmed >= unconfirmed_limit and prev_ok:
            reason = (f"{info.unconfirmed} boots in a row without `bankctl boot-ok` "
                      f"(the image asks for it; the limit is {unconfirmed_limit})")
            b.note(f"current {cur}: {reason}; falling back to previous {prev}, which becomes current")
        if reason is not None:
            b.effect(DEMOTE, cur, reason)
            b.bad_now.add(cur)
            b.cur, b.prev = prev, cur
    if b.cur is None:
        best = _newest_good(b.snap, exclude={b.nxt} | b.low)
        if best is not None:
            b.effect(REPOINT_CURRENT, best)
            b.note(f"no usable current pointer: {best}, the newest good image, becomes current")
            b.cur = best
            if b.prev == best:
                b.prev = None


def _order(b: _Boot, select: str | None, pinned: str | None) -> None:
    """The candidates: a selection, the pinned image, the trial (its try spent), current, previous, other good
    images newest first, then every other image as a last resort (never a trial: its boots are bounded by its
    tries). Each image once, in the first place it was put."""
    snap, trial = b.snap, b.trial
    order: list[Candidate] = []
    if select:
        chosen = _selected(snap, select, b.cur, b.nxt, b.prev, trial, b.plan, b.low)
        if chosen is not None:
            order.append(chosen)
            # A person's choice replaces the trial for this boot: no try is spent on an image not asked for.
            trial = None
    if pinned is not None and (trial is None or trial.image != pinned):
        order.append(Candidate(pinned, "on its own kernel", role=PINNED))
        trial = None
    if trial is not None:
        order.append(trial)
    spent = [c.image for c in order if c.trial and c.image != pinned]
    if spent:
        b.effect(SPEND_TRY, spent[0])
    if b.cur is not None:
        order.append(Candidate(b.cur, "current", role=CURRENT))
    if b.prev is not None and _state(snap, b.prev) != BAD and b.prev not in b.bad_now:
        order.append(Candidate(b.prev, "previous", role=PREVIOUS))
    seen = {c.image for c in order}
    good = {i for i, v in snap.images.items() if v.state == GOOD}
    for image in _by_newest(snap, good - seen - {b.nxt} - b.bad_now - b.low):
        order.append(Candidate(image, "another good image", role=OTHER_GOOD))
    seen = {c.image for c in order}
    doubtful = {i for i, v in snap.images.items() if v.state != TRIAL} | b.bad_now
    for image in _by_newest(snap, doubtful - seen - b.low):
        info = snap.images[image]
        if image in b.bad_now:
            what = "marked bad in this boot"
        else:
            what = f"marked bad: {info.reason}" if info.state == BAD else f"state {info.state or 'unknown'}"
        order.append(Candidate(image, f"last resort ({what})", role=LAST_RESORT))
    done: set[str] = set()
    for c in order:
        if c.image not in done:
            b.plan.candidates.append(c)
            done.add(c.image)


def _selected(snap: Snapshot, select: str, cur: str | None, nxt: str | None, prev: str | None,
              trial: Candidate | None, plan: Plan, low: set[str]) -> Candidate | None:
    if select in POINTERS:
        image = {"current": cur, "next": nxt, "previous": prev}[select]
        if image is None:
            plan.notes.append(f"selected {select}, but there is no {select} image: booting as usual")
            return None
    elif select in snap.images:
        image = select
    else:
        plan.notes.append(f"selected image {select!r} is not on the banks partition (images: "
                          f"{', '.join(sorted(snap.images)) or 'none'}): booting as usual")
        return None
    if image in low:
        why = dict(snap.untrusted).get(image) or f"below the anti-rollback floor {snap.boot_floor}"
        plan.notes.append(f"selected image {image} is {why}: booting as usual")
        return None
    if trial is not None and image == trial.image:
        return Candidate(image, f"selected ({select}), trial", True, SELECTED)
    if image == snap.next and _state(snap, image) == TRIAL:
        plan.notes.append(f"selected image {image} is a trial with no tries left: booting as usual")
        return None
    info = snap.images[image]
    if info.state == BAD:
        plan.notes.append(f"selected image {image} is marked bad ({info.reason}); booting it as asked")
    return Candidate(image, f"selected ({select})", role=SELECTED)


def _by_newest(snap: Snapshot, ids: Iterable[str | None]) -> list[str]:
    real = {i for i in ids if i is not None}
    return sorted(real, key=lambda i: (snap.images[i].committed, version_key(snap.images[i].version), i), reverse=True)


def _newest_good(snap: Snapshot, exclude: AbstractSet[str | None]) -> str | None:
    good = {i for i, v in snap.images.items() if v.state == GOOD} - exclude
    ranked = _by_newest(snap, good)
    return ranked[0] if ranked else None
