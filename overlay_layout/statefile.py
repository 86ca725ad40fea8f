"""The state file of a banks partition (state.json: per-image state and tries, pending resets) and its
backup of the anti-rollback floors (floor.json), read and written here only. A state file of any content is
read without crashing: damage is a warning, a copy kept for inspection, and state rebuilt from the layout
(never with a lower floor). One StateStore is one operation's view: it reads what it is asked for, collects
warnings, and remembers what it found lost so that the boot writes it back (repair)."""

from __future__ import annotations

import os

from overlay_layout import durable, jsontext, policy
from overlay_layout.jsontext import Damaged, keep_aside, read_json
from overlay_layout.layout import POINTERS, Layout, LayoutError, check_id
from overlay_layout.policy import BAD, GOOD, TRIAL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from overlay_layout.records import ImageEntry, StateFile

STATE_FILE = "state.json"
FLOOR_FILE = "floor.json"  # the anti-rollback floors again, so losing state.json does not lose them
STATE_FORMAT = 1
MAX_STATE_BYTES = 1 << 20  # far more than any real state file; a bigger one is damage


def empty_state() -> StateFile:
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


class StateStore:
    """The state file and floors of the banks partition at `root`, with the pointers and manifests they are
    read against."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.layout = Layout(root)
        self.state_path = os.path.join(root, STATE_FILE)
        self.warnings: list[str] = []
        self.rebuilt = False  # load() found the state file damaged or missing and rebuilt it from the layout
        self.floor_lost = False  # floor.json was found damaged or missing: begin_boot rewrites it

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
            return self._rebuild(None, None) if self._holds_images() else empty_state()
        try:
            return check_state(got[0])
        except ValueError as e:  # valid JSON of the wrong shape
            return self._rebuild(str(e)[:200], got[1])

    def _holds_images(self) -> bool:
        return bool(self.layout.images()) or any(os.path.lexists(os.path.join(self.layout.overlay, p))
                                                 for p in POINTERS)

    def _rebuild(self, why: str | None, raw: bytes | None) -> StateFile:
        """State from the layout alone: current and previous are good (they were committed); a pending
        trial is dropped (stage it again); the floors come from floor.json (and current's version), so
        writing the rebuilt file back (begin_boot) keeps the two files backing each other up.
        why=None: the file is missing."""
        st = empty_state()
        for name in ("current", "previous"):
            image = self.read_pointer(name)
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
        floor = highest(st.get("floor"), kept.get("floor"), self._version(self.read_pointer("current")))
        boot = highest(st.get("boot_floor"), kept.get("boot_floor"))
        if boot is None:
            versions = [v for v in (self._version(self.read_pointer(p)) for p in ("current", "previous")) if v]
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
                if k in ("floor", "boot_floor") and isinstance(v, str) and is_version(v)}

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
        st = empty_state()
        st["images"][check_id(image)] = {"state": GOOD}
        version = self._version(image)
        self.set_floors(st, version, version)
        self.save(st)
        self.layout.set_pointer("current", image)

    def _version(self, image: str | None) -> str | None:
        v = self.manifest(image).get("version") if image else None
        return v if is_version(v) else None

    def save(self, st: StateFile) -> None:
        data = jsontext.dumps(st, sort_keys=True).encode() + b"\n"
        durable.write_file(self.state_path, data)

    def manifest(self, image: str) -> dict[str, Any]:
        """`image`'s installed manifest as it is (unchecked: the init verifies it before it boots), {} when it
        cannot be read."""
        from overlay_layout.manifest import MAX_MANIFEST

        try:
            with open(self.layout.manifest_path(image), "rb") as f:
                m = jsontext.loads(f.read(MAX_MANIFEST))
            return m if isinstance(m, dict) else {}
        except (OSError, ValueError, RecursionError, LayoutError):
            return {}

    def read_pointer(self, name: str) -> str | None:
        """The image a pointer names; a damaged pointer is a warning and None (the boot goes on without it)."""
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
            return {"state": GOOD} if image in (self.read_pointer("current"), self.read_pointer("previous")) else {}
        return entry

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


def is_version(v: object) -> bool:
    return isinstance(v, str) and policy.version_key(v)[0] == 1


def highest(*versions: object) -> str | None:
    good = [v for v in versions if isinstance(v, str) and is_version(v)]
    return max(good, key=policy.version_key) if good else None
