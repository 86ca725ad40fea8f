"""The status view: what `bankctl status` prints (as JSON or text), what the console menu offers and what the
next boot would try, from one read of the state file and the floors. Not on the boot path (the menu reads it
only when ESC was pressed)."""

from __future__ import annotations

from overlay_layout import policy
from overlay_layout.manifest import persist_mount_options, split_persist
from overlay_layout.policy import TRIAL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.records import Status, StatusImage
    from overlay_layout.state import Banks


def status(banks: Banks, unconfirmed_limit: int = policy.DEFAULT_UNCONFIRMED_LIMIT) -> Status:
    """The partition's images, pointers, floors and warnings, and the next boot's plan (nothing is written)."""
    st = banks.load()
    floor, boot_floor = floors = banks.floors(st)
    snap = banks.snapshot(st, floors)
    plan = policy.plan_boot(snap, None, unconfirmed_limit)
    pointers = {"current": snap.current, "next": snap.next, "previous": snap.previous}
    images: list[StatusImage] = []
    for image, info in snap.images.items():
        kernel = banks.manifest(image).get("kernel")
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
    return {"pointers": pointers, "images": images, "floor": floor, "boot_floor": boot_floor,
            "plan": [{"image": c.image, "why": c.why, "trial": c.trial} for c in plan.candidates],
            "warnings": banks.warnings + [n for n in plan.notes if n not in banks.warnings]}
