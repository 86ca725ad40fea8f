"""What removes data on the banks partition: a factory reset of an image's upper (asked for while the image
runs, applied by the next boot before the image is mounted) and gc (images no pointer names, and what cut
stages and downloads left behind). Each step can be cut by a power loss and redone."""

from __future__ import annotations

import os
import time

from overlay_layout import durable
from overlay_layout.layout import DOWNLOAD, POINTERS, check_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.state import Banks


def request_reset(banks: Banks, image: str, keep_backup: bool) -> None:
    """Factory reset of `image`'s upper at its next boot (the upper is in use while it runs)."""
    st = banks.load()
    st["reset"][check_id(image)] = {"keep_backup": keep_backup, "requested": int(time.time())}
    banks.save(st)


def apply_reset(banks: Banks, image: str) -> str | None:
    """At boot, before mounting: move a reset image's upper to backups/ and start an empty one.
    Returns what was done, or None. Each step can be cut and redone: the backup name is new every
    time (boards without a clock boot in the same second again and again)."""
    st = banks.load()
    req = st["reset"].get(image)
    if req is None:
        return None
    # backups/ is reached without following a planted symlink (the upper is renamed into it, old ones
    # removed from it); a symlinked upper or work is moved or removed as the link it is.
    replaced: list[str] = []
    try:
        upper = banks.layout.sub(image, "upper")
        backups, _ = banks.layout.ensure_sub(image, "backups", replaced)
        backup = None
        if os.path.lexists(upper):
            backup = _unused_name(os.path.join(backups, "upper-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())))
            durable.rename(upper, backup)
        banks.layout.ensure_sub(image, "upper", replaced)
        work = banks.layout.sub(image, "work")
        durable.remove_tree(work)
        banks.layout.ensure_sub(image, "work", replaced)
    finally:
        for r in replaced:
            banks._warn(r)
    del st["reset"][image]
    banks.save(st)
    if not req.get("keep_backup"):
        # Earlier cut resets left their backups here too: all of them were the image's old changes.
        for name in os.listdir(backups):
            if name.startswith("upper-"):
                durable.remove_tree(os.path.join(backups, name))
        durable.fsync_dir(backups)
        return "reset: upper emptied"
    return f"reset: upper emptied, old one kept in {backup}"


def gc(banks: Banks, booted: str | None) -> list[str]:
    """Remove images that are neither previous, current nor next (nor running), staging leftovers and
    unfinished downloads (`bankctl stage URL` would have resumed them). Callers hold the banks lock, so no
    stage is in progress."""
    keep = {banks.read_pointer(p) for p in POINTERS} | {booted}
    removed = []
    st = banks.load()
    for image in banks.layout.images():
        if image not in keep:
            durable.remove_tree(banks.layout.image_dir(image))
            st["images"].pop(image, None)
            st["reset"].pop(image, None)
            removed.append(image)
    removed += banks.remove_staging_leftovers()
    overlay = banks.layout.overlay
    for name in sorted(os.listdir(overlay)) if os.path.isdir(overlay) else []:
        if name.startswith(DOWNLOAD):
            durable.remove_tree(os.path.join(overlay, name))
            removed.append(name)
    if removed:
        banks.save(st)
        durable.fsync_dir(banks.layout.overlay)
    return removed


def _unused_name(base: str) -> str:
    if not os.path.lexists(base):
        return base
    n = 1
    while os.path.lexists(f"{base}.{n}"):
        n += 1
    return f"{base}.{n}"
