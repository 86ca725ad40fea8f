"""The syntax of the names and versions bankboot reads from disk, checked with plain string operations: the
boot path must not import `re` (it brings `enum` and `functools` and compiles patterns, a cost every boot
pays on a slow board). ASCII only: a digit is 0-9, a letter A-Z or a-z."""

from __future__ import annotations

DIGITS = frozenset("0123456789")
ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") | DIGITS
NAME_CHARS = ALNUM | frozenset("._+-")  # image ids, kernel releases
PATH_PART_CHARS = NAME_CHARS | frozenset("@")  # parts of a persistent path
SEMVER_ID_CHARS = ALNUM | frozenset(".-")  # pre-release and build parts of a version


def made_of(text: str, allowed: frozenset[str]) -> bool:
    """True when `text` is not empty and every character is in `allowed`."""
    return bool(text) and all(c in allowed for c in text)


def is_name(text: str, longest: int, alnum_first: bool = False) -> bool:
    """Letters, digits and . _ + -, 1 to `longest` characters; alnum_first: starting with a letter or digit."""
    return 0 < len(text) <= longest and made_of(text, NAME_CHARS) and (not alnum_first or text[0] in ALNUM)


def is_absolute_path(text: str) -> bool:
    """/a/b/c: at least one part, each of letters, digits and . _ + @ - (no empty part, no trailing /)."""
    return text.startswith("/") and all(made_of(part, PATH_PART_CHARS) for part in text[1:].split("/"))


def _number(text: str) -> int | None:
    """A version number: digits without a leading zero (0 itself is fine)."""
    if not made_of(text, DIGITS) or (len(text) > 1 and text[0] == "0"):
        return None
    return int(text)


def split_semver(text: str) -> tuple[int, int, int, str | None, str | None] | None:
    """MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] as (major, minor, patch, prerelease, build), or None."""
    main, plus, build = text.partition("+")
    if plus and not made_of(build, SEMVER_ID_CHARS):
        return None
    core, dash, pre = main.partition("-")
    if dash and not made_of(pre, SEMVER_ID_CHARS):
        return None
    parts = core.split(".")
    if len(parts) != 3:
        return None
    numbers = [_number(p) for p in parts]
    if None in numbers:
        return None
    major, minor, patch = numbers
    assert major is not None and minor is not None and patch is not None
    return major, minor, patch, pre if dash else None, build if plus else None
