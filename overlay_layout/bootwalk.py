"""The boot's candidate walk: plan the boot (its writes made first), then try the candidates in order until
one prepares. Between the plan and the hand-over this is the whole state machine of a boot: a factory
reset is applied before its image is touched, a trial that fails to prepare is marked bad at once, and a
kexec's second stage tries only the image its loader chose (the loader falls back, not the second stage).

What "prepare" means (mount, verify, preflight, self-test) is the caller's: the init passes its mounting
step (initfs/bootflow.py), the hypothesis model a step that fails for the images it damaged. Both run this
one walk, so the model checks the walk the init runs."""

from __future__ import annotations

from overlay_layout.errors import BankbootError
from overlay_layout.policy import DEFAULT_UNCONFIRMED_LIMIT, SELECTED
from overlay_layout.recordtype import make_record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from overlay_layout.policy import Candidate, Plan
    from overlay_layout.records import Chosen as Chosen
    from overlay_layout.records import Prepared, Tried
    from overlay_layout.state import Banks

    T = TypeVar("T")
    Report = Callable[[str], None]
else:
    # candidate: the one that prepared (None: none did); why: as the boot record says it; prepared: what its
    # preparation found; tried: the candidates that failed before it; plan: the boot's plan.
    Chosen = make_record("Chosen", "candidate why prepared tried plan")


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
         how: str = "", unconfirmed_limit: int = DEFAULT_UNCONFIRMED_LIMIT, pinned: str | None = None,
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
        why = f"{how}: {cand.why}" if cand.role == SELECTED else cand.why
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
