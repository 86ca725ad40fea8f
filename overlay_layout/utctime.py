"""Times and durations as channel documents and bankctl's options write them: UTC instants as
`2026-12-01T10:00:00Z` (RFC 3339, seconds, always Z) and durations as `90s`, `30m`, `6h`, `30d`, `2w`.

Parsed by hand: the frozen bankctl carries neither datetime nor _strptime (builder/freeze.py), and a
channel's expiry is one format that needs no more."""

from __future__ import annotations

import time

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def format_utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_utc(text: object) -> int | None:
    """Seconds since the epoch of a `YYYY-MM-DDTHH:MM:SSZ` string; None for anything else."""
    if not isinstance(text, str) or len(text) != 20 or not text.isascii() or text[19] != "Z" \
            or [text[i] for i in (4, 7, 10, 13, 16)] != ["-", "-", "T", ":", ":"]:
        return None
    parts = (text[0:4], text[5:7], text[8:10], text[11:13], text[14:16], text[17:19])
    if not all(p.isdigit() for p in parts):
        return None
    y, mo, d, h, mi, s = (int(p) for p in parts)
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if not (y >= 1970 and 1 <= mo <= 12 and 1 <= d <= _DAYS[mo - 1] + (mo == 2 and leap) and h < 24 and mi < 60
            and s < 60):
        return None
    return _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s


def parse_duration(text: str) -> float:
    """Seconds in `text` (a number and one unit of UNITS, e.g. 30m); ValueError names what is wrong."""
    value, unit = text.strip()[:-1], text.strip()[-1:]
    if unit not in UNITS:
        raise ValueError(f"{text!r} is not a duration: a number and a unit, s, m, h, d or w (e.g. 30m, 6h, 30d)")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration: {value!r} is not a number") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{text!r} is not a duration: it must be a number of {unit} of 0 or more")
    return number * UNITS[unit]


def format_duration(seconds: float) -> str:
    """The largest unit that shows `seconds` whole (or with one decimal)."""
    for unit in ("w", "d", "h", "m"):
        n = seconds / UNITS[unit]
        if n >= 1 and (n == int(n) or n >= 10):
            return f"{n:.0f}{unit}" if n == int(n) else f"{n:.1f}{unit}"
    return f"{seconds:g}s"
