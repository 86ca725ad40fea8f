"""JSON for the boot path, straight over CPython's C accelerator (`_json`): the `json` package compiles
regular expressions when it is imported (json.decoder, json.scanner, json.encoder import `re`, which brings
`enum` and `functools`), a cost every boot would pay on a slow board for files a C scanner reads anyway.

loads() parses like json.loads (the C scanner json uses itself), except that NaN and Infinity are refused
(no file of ours holds them) and bytes must be UTF-8. dumps() writes exactly what
json.dumps(obj, sort_keys=..., separators=(",", ":")) writes (spaced: what json.dumps(obj, sort_keys=...)
writes): the same C encoder with the same settings (the canonical manifest bytes that signatures cover
depend on it; tests/unit/test_jsontext.py checks both).

JSON files on the banks partition (state, boot log, trust file, poll state) are read here too (read_json),
so that no content can crash the reader: a size cap, any parse failure (deep nesting included) reported as
damage, and the damaged bytes kept aside once for inspection (keep_aside). Callers decide what damage means
for their file. One module for both: the boot reads such files, and a module more costs every boot."""

from __future__ import annotations

import _json
import os

from overlay_layout import durable
from overlay_layout.errors import BankbootError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed here")


class _Context:
    """What _json.make_scanner reads from json.decoder.JSONDecoder: its settings, the defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # the attributes are what it reads
_WHITESPACE = " \t\n\r"


def loads(data: bytes | str) -> Any:
    """A JSON document; ValueError (UnicodeDecodeError is one) or RecursionError when it is not one."""
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError(f"not JSON: no value at character {e.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"not JSON: extra data at character {end}")
    return value


def _unencodable(o: object) -> object:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def dumps(obj: object, sort_keys: bool = False, spaced: bool = False) -> str:
    """Compact JSON (no spaces), ASCII only; keys sorted when asked. spaced: json.dumps's default separators
    (", " and ": "), for files other programs read with grep or sed (/run/bankboot/booted). A fresh encoder
    each time, as json's: its circular-reference markers must not outlive a failed call."""
    if isinstance(obj, str):
        return str(_json.encode_basestring_ascii(obj))
    key, item = (": ", ", ") if spaced else (":", ",")
    encode = _json.make_encoder({}, _unencodable, _json.encode_basestring_ascii, None, key, item, sort_keys, False,
                                True)
    return "".join(encode(obj, 0))


class Damaged(ValueError, BankbootError):
    """The file exists but is not usable JSON; `raw` holds what was read (None: it could not be read)."""

    def __init__(self, why: str, raw: bytes | None) -> None:
        super().__init__(why)
        self.raw = raw


def read_json(path: str, limit: int) -> tuple[object, bytes] | None:
    """(the parsed content, the bytes read), or None when the file does not exist. The bytes are for
    keep_aside when the caller finds the content of the wrong shape."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Damaged(f"cannot be read: {e.strerror}", None) from e
    if len(raw) > limit:
        raise Damaged(f"larger than {limit} bytes", raw)
    try:
        return loads(raw), raw
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise Damaged(str(e)[:200], raw) from e


def keep_aside(path: str, raw: bytes | None, limit: int) -> str | None:
    """Copy damaged bytes to PATH.damaged (the first damage seen is the one kept). Returns the copy's path,
    or None when there is nothing to keep or it cannot be written (a full or failing partition)."""
    if raw is None:
        return None
    copy = f"{path}.damaged"
    try:
        if not os.path.exists(copy):
            durable.write_file(copy, raw[:limit])
        return copy
    except OSError:
        return None
