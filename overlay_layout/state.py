"""The bank state machine: which image boots, trial boots with a try counter, commit, fallback.

State lives in two kinds of durable objects, each written atomically (durable.py): the pointer symlinks
(overlay/current, next, previous) and the state file (state.json: per-image state and tries, pending
resets, the anti-rollback floor). Every transition is a sequence of such writes ordered so that a power
cut after any of them leaves a state the next boot handles:

- an image becomes `next` only after it is complete on disk and recorded as a trial;
- a trial's try is spent (written) before it is mounted;
- `next` whose state is good means "make it current": the next boot rolls that forward, so a commit cut
  half-way finishes at the next boot, and `rollback` is the same move towards `previous`;
- `current` only ever names an image whose state is good.

What boots is decided by policy.plan_boot, a pure function of a snapshot; this module reads the snapshot
and applies the plan's writes. A state file of any content is read without crashing: damage is a warning,
a copy kept for inspection, and state rebuilt from the layout (never with a lower floor)."""

from __future__ import annotations

import os
import time

from overlay_layout import durable, jsontext, policy
from overlay_layout.errors import Refused
from overlay_layout.jsonfile import Damaged, keep_aside, read_json
from overlay_layout.layout import Layout, LayoutError, check_id
from overlay_layout.manifest import persist_mount_options, split_persist
from overlay_layout.policy import BAD, GOOD, TRIAL, Candidate, Effect, ImageInfo, Plan, Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from overlay_layout.records import ImageEntry, StateFile

STATE_FILE = "state.json"
FLOOR_FILE = "floor.json"  # the anti-rollback floors again, so losing state.json does not lose them
STATE_FORMAT = 1
DEFAULT_TRIES = 3
MAX_STATE_BYTES = 1 << 20  # far more than any real state file; a bigger one is damage
__all__ = ["BAD", "GOOD", "TRIAL", "Banks", "Candidate", "Choice", "StateError"]


class StateError(Refused):
    """A transition that is not allowed now (exit code 3 in bankctl)."""


Choice = Candidate  # what one boot tries: image, why, trial


def _empty() -> StateFile:
    return {"format": STATE_FORMAT, "images": {}, "reset": {}}


_ENTRY_TYPES = {"state": str, "tries": int, "reason": str, "staged": int, "committed": int, "unconfirmed": int}


def check_state(st: object) -> StateFile:
    """The state file's shape, checked field by field; ValueError names what is wrong."""
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise ValueError("not a bankboot state file (no \"format\": 1)")
    images, reset = st.get("images"), st.get("reset", {})
    if not isinstance(images, dict) or not isinstance(reset, dict):
        raise ValueError("\"images\" and \"reset\" must be objects")
    for image, entry in images.items():
        if not isinstance(entry, dict):
            raise ValueError(f"the entry of image {image!r} is not an object")
        for key, kind in _ENTRY_TYPES.items():
            if key in entry and (not isinstance(entry[key], kind) or isinstance(entry[key], bool)):
                raise ValueError(f"image {image!r}: {key!r} must be a {kind.__name__}")
        if entry.get("state", GOOD) not in (GOOD, TRIAL, BAD):
            raise ValueError(f"image {image!r}: unknown state {entry.get('state')!r}")
        if not 0 <= entry.get("tries", 0) <= 1000 or entry.get("unconfirmed", 0) < 0:
            raise ValueError(f"image {image!r}: counters out of range")
    for image, req in reset.items():
        if not isinstance(req, dict):
            raise ValueError(f"the reset request of {image!r} is not an object")
    for key in ("floor", "boot_floor"):
        if key in st and not isinstance(st[key], str):
            raise ValueError(f"\"{key}\" must be a string")
    st.setdefault("reset", {})
    return st  # type: ignore[return-value]  # its shape is checked field by field above


class Banks:
    def __init__(self, root: str) -> None:
        self.root = root
        self.layout = Layout(root)
        self.state_path = os.path.join(root, STATE_FILE)
        self.warnings: list[str] = []
        self.rebuilt = False  # load() found the state file damaged or missing and rebuilt it from the layout
        self.floor_lost = False  # floor.json was found damaged or missing: begin_boot rewrites it
        # Why an image's manifest can never verify under the keys in force (trust.KeySet.refusal), None when it
        # may: such images are no candidates at all (docs/trust.md, revocation). Set by whoever knows the keys.
        self.untrusted: Callable[[dict[str, Any]], str | None] | None = None

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    # -- the state file ---------------------------------------------------------------------------------
    def load(self) -> StateFile:
        """The state file. A damaged one (unreadable, not JSON, wrong shape, huge) is kept aside for inspection
        and the state rebuilt from the layout; so is a missing one on a partition that holds an image (every
        installed image was recorded in it: it was deleted). Only an empty partition has none."""
        try:
            got = read_json(self.state_path, MAX_STATE_BYTES)
        except Damaged as e:
            return self._rebuild(str(e), e.raw)
        if got is None:
            return self._rebuild(None, None) if self._holds_images() else _empty()
        try:
            return check_state(got[0])
        except ValueError as e:  # valid JSON of the wrong shape
            return self._rebuild(str(e)[:200], got[1])

    def _holds_images(self) -> bool:
        return bool(self.layout.images()) or any(os.path.lexists(os.path.join(self.layout.overlay, p))
                                                 for p in ("current", "next", "previous"))

    def _rebuild(self, why: str | None, raw: bytes | None) -> StateFile:
        """State from the layout alone: current and previous are good (they were committed); a pending
        trial is dropped (stage it again); the floors come from floor.json (and current's version), so
        writing the rebuilt file back (begin_boot) keeps the two files backing each other up.
        why=None: the file is missing."""
        st = _empty()
        for name in ("current", "previous"):
            image = self._pointer(name)
            if image is not None:
                st["images"][image] = {"state": GOOD}
        floor, boot_floor = self.floors(st)
        if floor is not None:
            st["floor"] = floor
        if boot_floor is not None:
            st["boot_floor"] = boot_floor
        if why is None:
            self._warn(f"{self.state_path} is missing; state rebuilt from the layout and {FLOOR_FILE} (a pending "
                       f"trial is dropped: stage it again)")
        else:
            copy = keep_aside(self.state_path, raw, MAX_STATE_BYTES)
            kept = f"; a copy is kept in {copy}" if copy else ""
            self._warn(f"{self.state_path} is damaged ({why}); state rebuilt from the layout{kept}")
        self.rebuilt = True
        return st

    # -- the anti-rollback floors ------------------------------------------------------------------------
    def floors(self, st: StateFile) -> tuple[str | None, str | None]:
        """(floor, boot_floor): nothing below `floor` is staged, nothing below `boot_floor` boots. Each is the
        highest of what state.json and floor.json record and, for the stage floor, the signed version of
        `current` (committed by definition); a lost or damaged file never lowers them. With no record at
        all (a disk from an older bankboot), the boot floor is the oldest of current and previous."""
        kept = self._read_floor_file()
        floor = _highest(st.get("floor"), kept.get("floor"), self._version(self._pointer("current")))
        boot = _highest(st.get("boot_floor"), kept.get("boot_floor"))
        if boot is None:
            versions = [v for v in (self._version(self._pointer(p)) for p in ("current", "previous")) if v]
            boot = min(versions, key=policy.version_key) if versions else None
        if boot is not None and floor is not None and policy.version_key(boot) > policy.version_key(floor):
            boot = floor
        return floor, boot

    def _read_floor_file(self) -> dict[str, str]:
        """floor.json's floors; a damaged file is a warning and counts for nothing (state.json still does), and
        so is a missing one on a partition that holds an image (`bankboot disk` wrote it). Either is rewritten
        from the floors in force at the next boot (begin_boot)."""
        path = os.path.join(self.root, FLOOR_FILE)
        try:
            got = read_json(path, 4096)
        except Damaged as e:
            self._warn(f"{path} is damaged ({e}); the floors in {STATE_FILE} are used")
            self.floor_lost = True
            return {}
        if got is None:
            if self._holds_images():
                self._warn(f"{path} is missing; the floors in {STATE_FILE} and the current image's version are "
                           f"used")
                self.floor_lost = True
            return {}
        if not isinstance(got[0], dict):
            self._warn(f"{path} is damaged (not an object); the floors in {STATE_FILE} are used")
            self.floor_lost = True
            return {}
        value = got[0]
        return {k: v for k, v in value.items()
                if k in ("floor", "boot_floor") and isinstance(v, str) and _is_version(v)}

    def set_floors(self, st: StateFile, floor: str | None, boot_floor: str | None) -> None:
        """Record the floors in floor.json, then in `st` (saved by the caller): a cut between the two leaves
        floor.json ahead, which floors() takes."""
        st.pop("floor", None)
        st.pop("boot_floor", None)
        if floor is not None:
            st["floor"] = floor
        if boot_floor is not None:
            st["boot_floor"] = boot_floor
        data = jsontext.dumps({"format": 1, "floor": floor, "boot_floor": boot_floor}, sort_keys=True).encode() + b"\n"
        durable.write_file(os.path.join(self.root, FLOOR_FILE), data)

    def install_first(self, image: str) -> None:
        """`bankboot disk`: the first image is current and good, and the floors start at its version."""
        st = _empty()
        st["images"][check_id(image)] = {"state": GOOD}
        version = self._version(image)
        self.set_floors(st, version, version)
        self.save(st)
        self.layout.set_pointer("current", image)

    def _version(self, image: str | None) -> str | None:
        v = self.manifest(image).get("version") if image else None
        return v if _is_version(v) else None

    def save(self, st: StateFile) -> None:
        data = jsontext.dumps(st, sort_keys=True).encode() + b"\n"
        durable.write_file(self.state_path, data)

    def manifest(self, image: str) -> dict[str, Any]:
        try:
            with open(self.layout.manifest_path(image), "rb") as f:
                m = jsontext.loads(f.read(65536))
            return m if isinstance(m, dict) else {}
        except (OSError, ValueError, RecursionError, LayoutError):
            return {}

    def _pointer(self, name: str) -> str | None:
        try:
            return self.layout.pointer(name)
        except LayoutError as e:
            self._warn(str(e))
            return None

    def image_state(self, st: StateFile, image: str | None) -> ImageEntry:
        if image is None:
            return {}
        entry = st["images"].get(image)
        if entry is None:
            # An image the state file does not know (the first one, installed by `bankboot disk`): `current`
            # is good by construction and `previous` was current; anything else is not known to be anything.
            return {"state": GOOD} if image in (self._pointer("current"), self._pointer("previous")) else {}
        return entry

    # -- what boots --------------------------------------------------------------------------------------
    def snapshot(self, st: StateFile | None = None) -> Snapshot:
        st = self.load() if st is None else st
        damaged = []
        pointers = {}
        for name in ("current", "next", "previous"):
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
        return Snapshot(pointers["current"], pointers["next"], pointers["previous"], images, tuple(damaged),
                        self.floors(st)[1], tuple(untrusted))

    def plan(self, select: str | None = None, unconfirmed_limit: int = policy.DEFAULT_UNCONFIRMED_LIMIT) -> Plan:
        """What the next boot would try, without writing anything (bankctl status, the console menu)."""
        return policy.plan_boot(self.snapshot(), select, unconfirmed_limit)

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
                self._apply(st, effect)
            except (OSError, LayoutError) as e:
                what = getattr(e, "strerror", None) or str(e)
                self._warn(f"cannot record '{effect.kind} {effect.image or effect.reason}' on the banks partition "
                           f"({what}); booting with the state in memory")
                if effect.kind == "spend_try":
                    plan.candidates = [c for c in plan.candidates if not c.trial]
                    self._warn(f"trial of {effect.image} skipped: its try could not be recorded")
        self.repair(st)
        return plan

    def repair(self, st: StateFile) -> None:
        """Write back what load() and floors() found lost or damaged, so the two floor files back each other up
        again: floor.json first (from the floors in force, which a lost file never lowered), then state.json.
        A write that fails is a warning; the next boot tries again."""
        if self.floor_lost:
            try:
                self.set_floors(st, *self.floors(st))
                self.floor_lost = False
                if not self.rebuilt:
                    self.save(st)
            except OSError as e:
                self._warn(f"cannot rewrite {os.path.join(self.root, FLOOR_FILE)} ({e.strerror})")
        if self.rebuilt:
            try:  # the repair, so the next boot (and bankctl) read a sound file again
                self.save(st)
                self.rebuilt = False
            except OSError as e:
                self._warn(f"cannot write the rebuilt {self.state_path} ({e.strerror})")

    def _apply(self, st: StateFile, e: Effect) -> None:
        lay = self.layout
        if e.kind == "drop_pointer":
            durable.remove(os.path.join(lay.overlay, e.reason))
        elif e.kind == "clear_next":
            lay.set_pointer("next", None)
        elif e.image is None:
            raise ValueError(f"effect {e.kind} names no image")
        elif e.kind == "roll_forward":
            self._roll_forward(e.image)
        elif e.kind == "mark_bad":
            self._mark_bad(st, e.image, e.reason)
        elif e.kind == "spend_try":
            entry = st["images"][e.image]
            entry["tries"] = max(0, entry.get("tries", 0) - 1)
            self.save(st)
        elif e.kind == "demote":
            # The bad state first: a cut before the pointers move leaves current bad, which demotes again.
            cur, prev = lay.pointer("current"), lay.pointer("previous")
            st["images"][e.image] = {**st["images"].get(e.image, {}), "state": BAD, "reason": e.reason,
                                     "unconfirmed": 0}
            if prev is not None:
                st["images"][prev] = {**st["images"].get(prev, {}), "state": GOOD, "unconfirmed": 0}
            self.save(st)
            if prev is not None and cur == e.image:
                lay.set_pointer("current", prev)
                lay.set_pointer("previous", e.image)
        elif e.kind == "repoint_current":
            lay.set_pointer("current", e.image)
        else:
            raise ValueError(f"unknown effect {e.kind}")

    def choose_boot(self, select: str | None = None) -> Candidate:
        """The first candidate of this boot (with the boot's writes made): what boots when it prepares."""
        plan = self.begin_boot(select)
        if not plan.candidates:
            raise LayoutError(f"nothing to boot on {self.root} (images present: "
                              f"{', '.join(self.layout.images()) or 'none'})")
        return plan.candidates[0]

    def _roll_forward(self, nxt: str) -> None:
        """Make a good `next` current: previous <- current, current <- next, next removed."""
        cur = self._pointer("current")
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
        image = booted or self._pointer("current")
        if image is None:
            raise StateError("no running image to confirm")
        st = self.load()
        entry = st["images"].get(image)
        if entry is not None and entry.get("unconfirmed"):
            entry["unconfirmed"] = 0
            self.save(st)
        return image

    # -- transitions -------------------------------------------------------------------------------------
    def add_trial(self, image: str, tries: int = DEFAULT_TRIES) -> None:
        """After the image is complete on disk: record it as a trial, then make it `next`."""
        if tries < 1:
            raise StateError(f"tries must be at least 1, not {tries}")
        if not os.path.isdir(self.layout.image_dir(image)):
            raise StateError(f"image {image} is not on the banks partition")
        if image == self._pointer("current"):
            raise StateError(f"image {image} is already current")
        self.refuse_if_rollback_pending()
        st = self.load()
        st["images"][image] = {"state": TRIAL, "tries": tries, "staged": int(time.time())}
        self.save(st)
        self.layout.set_pointer("next", image)

    def refuse_if_rollback_pending(self) -> None:
        """`next` that is good is a commit or rollback the next boot finishes; staging would cancel it."""
        nxt = self._pointer("next")
        if nxt is not None and self.image_state(self.load(), nxt).get("state") == GOOD:
            raise StateError(f"a switch to {nxt} (a rollback, or a commit) is pending and finishes at the next "
                             f"boot: reboot first, then stage")

    def mark_good(self, booted: str | None) -> str:
        """The running trial is healthy: commit it (it becomes current, current becomes previous)."""
        st = self.load()
        nxt = self._pointer("next")
        if nxt is None or self.image_state(st, nxt).get("state") != TRIAL:
            cur = self._pointer("current")
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
        new, outgoing = self._version(image), self._version(self._pointer("current"))
        if outgoing is None and self._pointer("current") not in (None, image):
            oldest = None  # the outgoing image's version cannot be read: do not make it unbootable
        else:
            oldest = min((v for v in (new, outgoing) if v), key=policy.version_key, default=None)
        self.set_floors(st, _highest(floor, new), _highest(boot, oldest))

    def lower_boot_floor(self, st: StateFile, version: str) -> None:
        """A downgrade the initramfs allows (stage --allow-downgrade): that version may boot."""
        floor, boot = self.floors(st)
        if boot is not None and policy.version_key(version) < policy.version_key(boot):
            self.set_floors(st, floor, version)
            self.save(st)

    def _mark_bad(self, st: StateFile, image: str, reason: str) -> None:
        st["images"][image] = {**st["images"].get(image, {}), "state": BAD, "tries": 0, "reason": reason}
        self.save(st)
        if self._pointer("next") == image:
            self.layout.set_pointer("next", None)

    def mark_bad(self, image: str | None, reason: str) -> str:
        """Give up a trial now (bankctl mark-bad)."""
        st = self.load()
        nxt = self._pointer("next")
        image = image or nxt
        if image is None or self.image_state(st, image).get("state") != TRIAL:
            raise StateError("no image is on trial")
        if image == self._pointer("current"):
            raise StateError(f"{image} is current and cannot be marked bad")
        self._mark_bad(st, image, reason)
        return image

    def rollback(self) -> str:
        """Boot `previous` next time; once it has booted it is current again."""
        prev = self._pointer("previous")
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
        nxt = self._pointer("next")
        if nxt is not None and self.image_state(st, nxt).get("state") == TRIAL:
            self._mark_bad(st, nxt, "superseded by a rollback")
        st["images"][prev] = {**st["images"].get(prev, {}), "state": GOOD}
        self.save(st)
        self.layout.set_pointer("next", prev)
        return prev

    def request_reset(self, image: str, keep_backup: bool) -> None:
        """Factory reset of `image`'s upper at its next boot (the upper is in use while it runs)."""
        st = self.load()
        st["reset"][check_id(image)] = {"keep_backup": keep_backup, "requested": int(time.time())}
        self.save(st)

    def apply_reset(self, image: str) -> str | None:
        """At boot, before mounting: move a reset image's upper to backups/ and start an empty one.
        Returns what was done, or None. Each step can be cut and redone: the backup name is new every
        time (boards without a clock boot in the same second again and again)."""
        st = self.load()
        req = st["reset"].get(image)
        if req is None:
            return None
        # backups/ is reached without following a planted symlink (the upper is renamed into it, old ones
        # removed from it); a symlinked upper or work is moved or removed as the link it is.
        replaced: list[str] = []
        try:
            upper = self.layout.sub(image, "upper")
            backups, _ = self.layout.ensure_sub(image, "backups", replaced)
            backup = None
            if os.path.lexists(upper):
                backup = _unused_name(os.path.join(backups, "upper-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())))
                durable.rename(upper, backup)
            self.layout.ensure_sub(image, "upper", replaced)
            work = self.layout.sub(image, "work")
            durable.remove_tree(work)
            self.layout.ensure_sub(image, "work", replaced)
        finally:
            for r in replaced:
                self._warn(r)
        del st["reset"][image]
        self.save(st)
        if not req.get("keep_backup"):
            # Earlier cut resets left their backups here too: all of them were the image's old changes.
            for name in os.listdir(backups):
                if name.startswith("upper-"):
                    durable.remove_tree(os.path.join(backups, name))
            durable.fsync_dir(backups)
            return "reset: upper emptied"
        return f"reset: upper emptied, old one kept in {backup}"

    def gc(self, booted: str | None) -> list[str]:
        """Remove images that are neither previous, current nor next (nor running), staging leftovers and
        unfinished downloads (`bankctl stage URL` would have resumed them). Callers hold the banks lock, so no
        stage is in progress."""
        keep = {self._pointer(p) for p in ("previous", "current", "next")} | {booted}
        removed = []
        st = self.load()
        for image in self.layout.images():
            if image not in keep:
                durable.remove_tree(self.layout.image_dir(image))
                st["images"].pop(image, None)
                st["reset"].pop(image, None)
                removed.append(image)
        removed += self.remove_staging_leftovers()
        overlay = self.layout.overlay
        for name in sorted(os.listdir(overlay)) if os.path.isdir(overlay) else []:
            if name.startswith(".download-"):
                durable.remove_tree(os.path.join(overlay, name))
                removed.append(name)
        if removed:
            self.save(st)
            durable.fsync_dir(self.layout.overlay)
        return removed

    def remove_staging_leftovers(self) -> list[str]:
        """What writes cut by a power loss left behind: `.staging-*` directories and durable.write_file's
        temp files (never in use: bankctl holds the banks lock while it writes, and the init runs before
        any bankctl)."""
        removed = []
        for d in (self.layout.overlay, self.root):
            names = os.listdir(d) if os.path.isdir(d) else []
            gone = [n for n in names if n.startswith(".staging-") or durable.is_temp_name(n)]
            for name in gone:
                durable.remove_tree(os.path.join(d, name))
            if gone:
                durable.fsync_dir(d)
            removed += gone
        return removed

    def status(self, unconfirmed_limit: int = policy.DEFAULT_UNCONFIRMED_LIMIT) -> dict[str, Any]:
        st = self.load()
        snap = self.snapshot(st)
        plan = policy.plan_boot(snap, None, unconfirmed_limit)
        pointers = {"current": snap.current, "next": snap.next, "previous": snap.previous}
        images = []
        for image, info in snap.images.items():
            kernel = self.manifest(image).get("kernel")
            images.append({"id": image, "version": info.version, "state": info.state or "unknown",
                           "kernel": kernel.get("release") if isinstance(kernel, dict) else None,
                           "tries": info.tries if info.state == TRIAL else None, "reason": info.reason,
                           "pointers": [p for p, v in pointers.items() if v == image],
                           "reset_pending": image in st["reset"], "confirm_boots": info.confirm,
                           "unconfirmed_boots": info.unconfirmed, "sealed": info.persist is not None,
                           "persist": list(info.persist) if info.persist is not None else None,
                           "persist_mounts": {split_persist(e)[0]: persist_mount_options(e) for e in info.persist}
                           if info.persist is not None else None,
                           "below_floor": policy.below_floor(info.version, snap.boot_floor),
                           "untrusted": dict(snap.untrusted).get(image)})
        floor, boot_floor = self.floors(st)
        return {"pointers": pointers, "images": images, "floor": floor, "boot_floor": boot_floor,
                "plan": [{"image": c.image, "why": c.why, "trial": c.trial} for c in plan.candidates],
                "warnings": self.warnings + [n for n in plan.notes if n not in self.warnings]}


def _is_version(v: object) -> bool:
    return isinstance(v, str) and policy.version_key(v)[0] == 1


def _highest(*versions: object) -> str | None:
    good = [v for v in versions if isinstance(v, str) and _is_version(v)]
    return max(good, key=policy.version_key) if good else None


def _unused_name(base: str) -> str:
    if not os.path.lexists(base):
        return base
    n = 1
    while os.path.lexists(f"{base}.{n}"):
        n += 1
    return f"{base}.{n}"
