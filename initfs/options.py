"""Every kernel command-line option the init reads, parsed once into typed, bounded values.

One table is the whole contract (docs/cmdline.md mirrors it): a value that does not parse or is out of
bounds is a console warning naming the option and the default is used; an unknown `bankboot.*` key is a
warning naming the nearest known one. Nothing on the command line can make the init crash, spin or wait
for ever by accident."""

from __future__ import annotations

from initfs.cmdline import Cmdline
from overlay_layout.recordtype import make_record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RESCUE_MODES = ("shell", "reboot")


# key; kind: seconds, int, str, flag or choice; default; low/high bounds; choices; help. A plain tuple record
# (recordtype.py), not a dataclass, typing.NamedTuple or namedtuple: each costs the init a long import on
# slow boards. The checker sees its typed twin in overlay_layout/records.py (tests/unit/test_records.py keeps
# the two the same).
_INF = float("inf")  # not math.inf: the init imports no module for a constant
if TYPE_CHECKING:
    from overlay_layout.records import Option as Option
else:
    Option = make_record("Option", "key kind default low high choices help", defaults=(0.0, _INF, (), ""))


OPTIONS = (
    Option("root", "str", None, help="the banks partition: /dev/..., PARTUUID=, LABEL=, UUID="),
    Option("rootfstype", "str", "ext4", help="filesystem of the banks partition"),
    Option("rootwait", "flag", False, help="wait for the banks partition for ever"),
    Option("rootdelay", "seconds", 0.0, 0, 300, help="sleep this long before looking for the banks partition"),
    Option("init", "str", "/sbin/init", help="the image's init"),
    Option("bankboot.roottimeout", "seconds", 30.0, 0.1, 3600, help="how long to wait for the banks partition"),
    Option("bankboot.select", "str", None, help="boot this image once: previous, current, next or an image id"),
    Option("bankboot.timeout", "seconds", 0.1, 0, 600,
           help="the ESC window, counted from the init's start; a key pressed before the boot is planned counts "
                "too (it overlaps module loading; hold ESC while powering on; 0: no prompt)"),
    Option("bankboot.menu_timeout", "seconds", 30.0, 1, 3600,
           help="the boot menu boots as planned after this long without a key"),
    Option("bankboot.watchdog", "int", 0, 0, 3600, help="arm the hardware watchdog for trials (seconds; 0: off)"),
    Option("bankboot.selftest_timeout", "seconds", 60.0, 1, 3600, help="time limit of each selftest.d check"),
    Option("bankboot.userdata", "str", None, help="the userdata partition (device spec), or `banks`"),
    Option("bankboot.userdatafstype", "str", "ext4", help="filesystem of the userdata partition"),
    Option("bankboot.rescue", "choice", None, choices=RESCUE_MODES,
           help="when nothing boots: a shell on the console, or a reboot to try again (board default)"),
    Option("bankboot.unconfirmed_boots", "int", None, 1, 100,
           help="boots without `bankctl boot-ok` before falling back (board default, 3)"),
    Option("bankboot.kexec", "str", None,
           help="set by bankboot's loader on the command line of an image's own kernel (never by hand)"),
    Option("bankboot.loader", "str", None,
           help="set with bankboot.kexec: the release of the loader's kernel, for bankctl status"),
    Option("bankboot.loader_slot", "str", None,
           help="set by the firmware's boot script or entry: the loader slot (a or b) this boot came from"),
    Option("bankboot.loader_trial", "flag", False,
           help="set by the firmware with bankboot.loader_slot for a loader on trial: the init commits it once it "
                "has chosen an image (docs/firmware.md)"),
    Option("bankboot.debug", "flag", False, help="timings of every step on the console"),
    Option("bankboot.step", "flag", False, help="wait for Enter before each step"),
)
BY_KEY = {o.key: o for o in OPTIONS}
# What a sealed build does not take from the command line (which sits on the boot partition, writable by
# anyone holding the card): the program that runs as PID 1, a pause for a keypress, the rescue shell.
SEALED_IGNORED = ("init", "bankboot.step")


def _parse(opt: Option, raw: str | None) -> object:
    if opt.kind == "flag":
        return True
    if raw is None or raw == "":
        raise ValueError("needs a value")
    if opt.kind == "str":
        return raw
    if opt.kind == "choice":
        if raw not in opt.choices:
            raise ValueError(f"must be one of {', '.join(opt.choices)}")
        return raw
    value = float(raw) if opt.kind == "seconds" else int(raw, 10)
    if not -_INF < value < _INF or not opt.low <= value <= opt.high:  # NaN compares false
        raise ValueError(f"must be a number from {opt.low:g} to {opt.high:g}")
    return value


class Options:
    """`opts.get("bankboot.timeout")` -> the typed value; `opts.warnings` for the console."""

    def __init__(self, cmdline: Cmdline, defaults: dict[str, object] | None = None, sealed: bool = False) -> None:
        self.values: dict[str, object] = {o.key: o.default for o in OPTIONS}
        self.values.update(defaults or {})
        self.given: set[str] = set()
        self.warnings: list[str] = []
        for key, raw in cmdline.params:
            opt = BY_KEY.get(key)
            if opt is None:
                if key.startswith("bankboot."):
                    self.warnings.append(f"unknown option {key} on the kernel command line (ignored)"
                                         f"{_nearest(key)}")
                continue
            if sealed and (key in SEALED_IGNORED or (key == "bankboot.rescue" and raw != "reboot")):
                self.warnings.append(f"{key}={raw} on the kernel command line ignored: this is a sealed build")
                continue
            try:
                self.values[key] = _parse(opt, raw)
                self.given.add(key)
            except ValueError as e:  # the default (or the board's) stays
                self.warnings.append(f"{key}={raw!r} on the kernel command line: {e}; using the default "
                                     f"{self.values[key]!r}")

    def get(self, key: str) -> Any:
        return self.values[BY_KEY[key].key]

    def has(self, key: str) -> bool:
        return key in self.given


def _nearest(key: str) -> str:
    """The known bankboot. key a typo is closest to (at most a third of its name's letters edited). Edit
    distance here rather than difflib, which would be the only user of its 21 kB in the initramfs."""
    name = key.removeprefix("bankboot.")
    best = min((_edits(name, o.key.removeprefix("bankboot.")), o.key) for o in OPTIONS
               if o.key.startswith("bankboot."))
    return f"; did you mean {best[1]}?" if best[0] <= max(1, len(name) // 3) else ""


def _edits(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions that turn a into b."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]
