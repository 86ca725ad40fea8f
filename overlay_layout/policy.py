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


def plan_boot(snap: Snapshot, select: str | None = None,
              unconfirmed_limit: int = DEFAULT_UNCONFIRMED_LIMIT, pinned: str | None = None) -> Plan:
    """`pinned`: the second stage of a kexec (bankboot.kexec=): the loader already planned this boot and
    spent the trial's try, so that image comes first and nothing is spent again."""
    plan = Plan(boot_floor=snap.boot_floor)
    cur, nxt, prev = snap.current, snap.next, snap.previous
    low = {i for i, v in snap.images.items() if below_floor(v.version, snap.boot_floor)}
    untrusted = dict(snap.untrusted)
    for name in snap.damaged:
        plan.effects.append(Effect(DROP_POINTER, pointer=name))
    for name, image in (("current", cur), ("next", nxt), ("previous", prev)):
        if image is not None and image not in snap.images:
            plan.notes.append(f"{name} points at {image}, which is not on the banks partition")
            plan.effects.append(Effect(DROP_POINTER, pointer=name))
    cur = cur if cur in snap.images else None
    nxt = nxt if nxt in snap.images else None
    prev = prev if prev in snap.images else None
    if nxt is not None and nxt == cur:
        plan.effects.append(Effect(CLEAR_NEXT))
        nxt = None
    for name, image in (("current", cur), ("next", nxt), ("previous", prev)):
        if image in untrusted:
            plan.notes.append(f"{name} points at {image}, which is {untrusted[image]}: it is not booted")
        elif image in low:
            plan.notes.append(f"{name} points at {image} (version {snap.images[image].version or 'unknown'}), below "
                              f"the anti-rollback floor {snap.boot_floor}: it is not booted")
    low |= set(untrusted) & set(snap.images)  # never a candidate, not even a last resort (docs/trust.md)
    if nxt in low:
        if _state(snap, nxt) == TRIAL:
            why = untrusted.get(nxt) or f"below the anti-rollback floor {snap.boot_floor}"
            plan.effects.append(Effect(MARK_BAD, nxt, why))
        else:
            plan.effects.append(Effect(CLEAR_NEXT))
        nxt = None
    if cur in low:
        cur = None
    if prev in low:
        prev = None

    if pinned is not None:
        # A bad image too: the loader boots one as a last resort, and the second stage must boot what the
        # loader chose (anything else would reboot to the loader, which would choose it again).
        if pinned not in snap.images or pinned in low:
            plan.notes.append(f"bankboot.kexec={pinned} ignored: not an image on the banks partition at or above "
                              f"the anti-rollback floor and signed by the keys in force")
            pinned = None
        else:
            select = None  # the person's choice was made in the loader's menu

    # `next` first: a committed one (or a rollback) rolls forward, a spent trial is given up.
    trial: Candidate | None = None
    bad_now: set[str] = set()  # marked bad by this plan: a last resort like any bad image
    if nxt is not None:
        st = _state(snap, nxt)
        if st == GOOD:
            plan.effects.append(Effect(ROLL_FORWARD, nxt))
            if cur is not None and cur != nxt:
                prev = cur
            cur, nxt = nxt, None
        elif st == TRIAL and nxt == pinned:
            trial = Candidate(nxt, f"trial of next, on its own kernel ({snap.images[nxt].tries} tries left after "
                                   f"this one)", True, ON_TRIAL)
        elif st == TRIAL and snap.images[nxt].tries > 0:
            left = snap.images[nxt].tries - 1
            trial = Candidate(nxt, f"trial of next ({left} tries left after this one)", True, ON_TRIAL)
        elif st == TRIAL:
            plan.effects.append(Effect(MARK_BAD, nxt, "trial never marked good: no tries left"))
            plan.notes.append(f"next {nxt} used up its tries without being marked good; it is marked bad")
            bad_now.add(nxt)
            nxt = None
        else:
            plan.effects.append(Effect(CLEAR_NEXT))
            plan.notes.append(f"next {nxt} is {st or 'of unknown state'}; it is not booted")
            nxt = None

    # `current` must be good; one that is bad, or that never confirmed its boots, gives way to previous.
    if cur is not None:
        info = snap.images[cur]
        prev_ok = prev is not None and prev != cur and _state(snap, prev) != BAD
        if info.state == BAD and prev_ok:
            plan.effects.append(Effect(DEMOTE, cur, info.reason or "marked bad"))
            plan.notes.append(f"current {cur} is marked bad ({info.reason}); previous {prev} becomes current")
            bad_now.add(cur)
            cur, prev = prev, cur
        elif info.confirm and info.unconfirmed >= unconfirmed_limit and prev_ok:
            reason = (f"{info.unconfirmed} boots in a row without `bankctl boot-ok` "
                      f"(the image asks for it; the limit is {unconfirmed_limit})")
            plan.effects.append(Effect(DEMOTE, cur, reason))
            plan.notes.append(f"current {cur}: {reason}; falling back to previous {prev}, which becomes current")
            bad_now.add(cur)
            cur, prev = prev, cur
    if cur is None:
        best = _newest_good(snap, exclude={nxt} | low)
        if best is not None:
            plan.effects.append(Effect(REPOINT_CURRENT, best))
            plan.notes.append(f"no usable current pointer: {best}, the newest good image, becomes current")
            cur = best
            if prev == best:
                prev = None

    order: list[Candidate] = []
    if select:
        chosen = _selected(snap, select, cur, nxt, prev, trial, plan, low)
        if chosen is not None:
            order.append(chosen)
            # A person's choice replaces the trial for this boot: no try is spent on an image not asked for.
            trial = None
    if pinned is not None and (trial is None or trial.image != pinned):
        order.append(Candidate(pinned, "on its own kernel", role=PINNED))
        trial = None
    if trial is not None:
        order.append(trial)
    if any(c.trial and c.image != pinned for c in order):
        plan.effects.append(Effect(SPEND_TRY, next(c.image for c in order if c.trial and c.image != pinned)))
    if cur is not None:
        order.append(Candidate(cur, "current", role=CURRENT))
    if prev is not None and _state(snap, prev) != BAD and prev not in bad_now:
        order.append(Candidate(prev, "previous", role=PREVIOUS))
    seen = {c.image for c in order}
    good = {i for i, v in snap.images.items() if v.state == GOOD}
    for image in _by_newest(snap, good - seen - {nxt} - bad_now - low):
        order.append(Candidate(image, "another good image", role=OTHER_GOOD))
    seen = {c.image for c in order}
    # Never a trial: its boots are bounded by its tries.
    for image in _by_newest(snap, ({i for i, v in snap.images.items() if v.state != TRIAL} | bad_now) - seen - low):
        info = snap.images[image]
        if image in bad_now:
            what = "marked bad in this boot"
        else:
            what = f"marked bad: {info.reason}" if info.state == BAD else f"state {info.state or 'unknown'}"
        order.append(Candidate(image, f"last resort ({what})", role=LAST_RESORT))
    # Each image once, in the first place it was put.
    done: set[str] = set()
    for c in order:
        if c.image not in done:
            plan.candidates.append(c)
            done.add(c.image)
    return plan


def _selected(snap: Snapshot, select: str, cur: str | None, nxt: str | None, prev: str | None,
              trial: Candidate | None, plan: Plan, low: set[str]) -> Candidate | None:
    if select in ("current", "next", "previous"):
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
