"""The bank state machine: which image boots, trial boots with a try counter, commit, fallback.

State lives in two kinds of durable objects, each written atomically (durable.py): the pointer symlinks
(overlay/current, next, previous) and the state file (state.json: per-image state and tries, pending
resets). Every transition is a sequence of such writes ordered so that a power cut after any of them
leaves a state the next boot handles:

- an image becomes `next` only after it is complete on disk and recorded as a trial;
- a trial's try is spent (written) before it is mounted;
- `next` whose state is good means "make it current": the next boot rolls that forward, so a commit cut
  half-way finishes at the next boot, and `rollback` is the same move towards `previous`;
- `current` only ever names an image whose state is good.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from overlay_layout import durable
from overlay_layout.layout import Layout, LayoutError, check_id

STATE_FILE = "state.json"
GOOD, TRIAL, BAD = "good", "trial", "bad"
STATE_FORMAT = 1
DEFAULT_TRIES = 3


class StateError(RuntimeError):
    """A transition that is not allowed now (exit code 3 in bankctl)."""


@dataclass(frozen=True)
class Choice:
    image: str
    why: str
    trial: bool


def _empty() -> dict:
    return {"format": STATE_FORMAT, "images": {}, "reset": {}}


class Banks:
    def __init__(self, root: str) -> None:
        self.root = root
        self.layout = Layout(root)
        self.state_path = os.path.join(root, STATE_FILE)
        self.warnings: list[str] = []

    # -- the state file ---------------------------------------------------------------------------------
    def load(self) -> dict:
        """The state file. A missing one is empty. An unreadable one is reported and treated as empty:
        at boot a damaged state file must not stop `current`, which is good by construction, from booting."""
        try:
            with open(self.state_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return _empty()
        try:
            st = json.loads(raw)
            if not isinstance(st, dict) or st.get("format") != STATE_FORMAT or not isinstance(st.get("images"), dict):
                raise ValueError("not a bankboot state file")
        except ValueError as e:
            self.warnings.append(f"{self.state_path} is damaged ({e}); treating it as empty")
            return _empty()
        st.setdefault("reset", {})
        return st

    def save(self, st: dict) -> None:
        data = json.dumps(st, sort_keys=True, indent=1).encode() + b"\n"
        durable.write_file(self.state_path, data)

    def image_state(self, st: dict, image: str | None) -> dict:
        if image is None:
            return {}
        entry = st["images"].get(image)
        if entry is None:
            # An image the state file does not know (the first one, installed by `bankboot disk`): `current`
            # is good by construction and `previous` was current; anything else is not known to be anything.
            return {"state": GOOD} if image in (self.layout.pointer("current"), self.layout.pointer("previous")) else {}
        return entry

    # -- what boots --------------------------------------------------------------------------------------
    def _roll_forward(self, st: dict, nxt: str) -> None:
        """Make a good `next` current: previous <- current, current <- next, next removed."""
        cur = self.layout.pointer("current")
        if cur is not None and cur != nxt:
            self.layout.set_pointer("previous", cur)
        self.layout.set_pointer("current", nxt)
        self.layout.set_pointer("next", None)

    def choose_boot(self, select: str | None = None) -> Choice:
        """Decide what boots now, writing what that decision spends (a try) before returning it. `select`
        (bankboot.select= or the console menu) is previous, current, next or an image id."""
        st = self.load()
        cur = self.layout.pointer("current")
        nxt = self.layout.pointer("next")
        if nxt is not None and nxt == cur:
            self.layout.set_pointer("next", None)
            nxt = None
        if nxt is not None and self.image_state(st, nxt).get("state") == GOOD:
            self._roll_forward(st, nxt)
            cur, nxt = nxt, None
            committed = True
        else:
            committed = False
        if select:
            return self._choose_selected(st, select, cur, nxt)
        if nxt is not None:
            entry = self.image_state(st, nxt)
            if entry.get("state") == TRIAL and entry.get("tries", 0) > 0:
                entry["tries"] -= 1
                st["images"][nxt] = entry
                self.save(st)
                return Choice(nxt, f"trial of next ({entry['tries']} tries left after this one)", True)
            if entry.get("state") == TRIAL:
                self._mark_bad(st, nxt, "trial never marked good: no tries left")
                why = f"next {nxt} used up its tries without being marked good; falling back to current"
            else:
                self.layout.set_pointer("next", None)
                why = f"next {nxt} is {entry.get('state', 'unknown')}; booting current"
            if cur is None:
                raise LayoutError(f"{why}, but there is no current image")
            return Choice(cur, why, False)
        if cur is None:
            prev = self.layout.pointer("previous")
            if prev is not None:
                return Choice(prev, "no current image: booting previous", False)
            raise LayoutError(f"{self.layout.overlay}/current does not exist: nothing to boot "
                              f"(images present: {', '.join(self.layout.images()) or 'none'})")
        return Choice(cur, "rolled forward to the committed image" if committed else "current", False)

    def _choose_selected(self, st: dict, select: str, cur: str | None, nxt: str | None) -> Choice:
        if select in ("previous", "current", "next"):
            image = {"current": cur, "next": nxt, "previous": self.layout.pointer("previous")}[select]
            if image is None:
                raise LayoutError(f"bankboot.select={select}: there is no {select} image")
        else:
            image = check_id(select)
            if not os.path.isdir(self.layout.image_dir(image)):
                raise LayoutError(f"bankboot.select={select}: no such image (images: "
                                  f"{', '.join(self.layout.images()) or 'none'})")
        entry = self.image_state(st, image)
        if image == nxt and entry.get("state") == TRIAL:
            if entry.get("tries", 0) <= 0:
                raise LayoutError(f"selected image {image} is a trial with no tries left")
            entry["tries"] -= 1
            st["images"][image] = entry
            self.save(st)
            return Choice(image, f"selected ({select}), trial", True)
        if entry.get("state") == BAD:
            self.warnings.append(f"selected image {image} is marked bad: {entry.get('reason', '')}")
        return Choice(image, f"selected ({select})", False)

    # -- transitions -------------------------------------------------------------------------------------
    def add_trial(self, image: str, tries: int = DEFAULT_TRIES) -> None:
        """After the image is complete on disk: record it as a trial, then make it `next`."""
        if tries < 1:
            raise StateError(f"tries must be at least 1, not {tries}")
        if not os.path.isdir(self.layout.image_dir(image)):
            raise StateError(f"image {image} is not on the banks partition")
        if image == self.layout.pointer("current"):
            raise StateError(f"image {image} is already current")
        st = self.load()
        st["images"][image] = {"state": TRIAL, "tries": tries, "staged": int(time.time())}
        self.save(st)
        self.layout.set_pointer("next", image)

    def mark_good(self, booted: str | None) -> str:
        """The running trial is healthy: commit it (it becomes current, current becomes previous)."""
        st = self.load()
        nxt = self.layout.pointer("next")
        if nxt is None or self.image_state(st, nxt).get("state") != TRIAL:
            cur = self.layout.pointer("current")
            if booted is not None and booted == cur:
                return cur  # already committed: mark-good is idempotent
            raise StateError("no image is on trial")
        if booted is not None and booted != nxt:
            raise StateError(f"the running image is {booted}, not the trial {nxt}: boot the trial first")
        st["images"][nxt] = {**st["images"].get(nxt, {}), "state": GOOD, "tries": 0,
                             "committed": int(time.time())}
        self._raise_floor(st, nxt)
        self.save(st)
        self._roll_forward(st, nxt)
        return nxt

    def _raise_floor(self, st: dict, image: str) -> None:
        """Anti-rollback: committing an image raises the version floor to its version (never lowers it)."""
        from overlay_layout.trust import TrustError, version_lt

        try:
            with open(self.layout.manifest_path(image), "rb") as f:
                version = json.loads(f.read()).get("version")
            if version and (not st.get("floor") or version_lt(st["floor"], version)):
                st["floor"] = version
        except (OSError, ValueError, TrustError):
            pass

    def _mark_bad(self, st: dict, image: str, reason: str) -> None:
        st["images"][image] = {**st["images"].get(image, {}), "state": BAD, "tries": 0, "reason": reason}
        self.save(st)
        if self.layout.pointer("next") == image:
            self.layout.set_pointer("next", None)

    def mark_bad(self, image: str | None, reason: str) -> str:
        """Give up a trial now (the init on a failed self-test, or bankctl mark-bad)."""
        st = self.load()
        nxt = self.layout.pointer("next")
        image = image or nxt
        if image is None or self.image_state(st, image).get("state") != TRIAL:
            raise StateError("no image is on trial")
        if image == self.layout.pointer("current"):
            raise StateError(f"{image} is current and cannot be marked bad")
        self._mark_bad(st, image, reason)
        return image

    def rollback(self) -> str:
        """Boot `previous` next time; once it has booted it is current again."""
        prev = self.layout.pointer("previous")
        if prev is None:
            raise StateError("there is no previous image to roll back to")
        st = self.load()
        if self.image_state(st, prev).get("state") == BAD:
            raise StateError(f"previous image {prev} is marked bad")
        nxt = self.layout.pointer("next")
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
        Returns what was done, or None."""
        st = self.load()
        req = st["reset"].get(image)
        if req is None:
            return None
        upper = self.layout.sub(image, "upper")
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        backup = os.path.join(self.layout.sub(image, "backups"), f"upper-{stamp}")
        durable.make_dirs(self.layout.sub(image, "backups"))
        if os.path.isdir(upper):
            durable.rename(upper, backup)
        durable.make_dirs(upper)
        work = self.layout.sub(image, "work")
        if os.path.isdir(work):
            durable.remove_tree(work)
        durable.make_dirs(work)
        del st["reset"][image]
        self.save(st)
        if not req.get("keep_backup"):
            durable.remove_tree(backup)
            return "reset: upper emptied"
        return f"reset: upper emptied, old one kept in {backup}"

    def gc(self, booted: str | None) -> list[str]:
        """Remove images that are neither previous, current nor next (nor running), and staging leftovers."""
        keep = {self.layout.pointer(p) for p in ("previous", "current", "next")} | {booted}
        removed = []
        st = self.load()
        for image in self.layout.images():
            if image not in keep:
                durable.remove_tree(self.layout.image_dir(image))
                st["images"].pop(image, None)
                st["reset"].pop(image, None)
                removed.append(image)
        for name in os.listdir(self.layout.overlay) if os.path.isdir(self.layout.overlay) else []:
            if name.startswith(".staging-"):
                durable.remove_tree(os.path.join(self.layout.overlay, name))
                removed.append(name)
        if removed:
            self.save(st)
            durable.fsync_dir(self.layout.overlay)
        return removed

    def status(self) -> dict:
        st = self.load()
        pointers = {p: self.layout.pointer(p) for p in ("current", "next", "previous")}
        images = []
        for image in self.layout.images():
            entry = self.image_state(st, image)
            manifest = {}
            try:
                with open(self.layout.manifest_path(image), "rb") as f:
                    manifest = json.loads(f.read())
            except (OSError, ValueError):
                pass
            images.append({"id": image, "version": manifest.get("version"), "state": entry.get("state", "unknown"),
                           "tries": entry.get("tries"), "reason": entry.get("reason"),
                           "pointers": [p for p, v in pointers.items() if v == image],
                           "reset_pending": image in st["reset"]})
        return {"pointers": pointers, "images": images, "warnings": self.warnings}
