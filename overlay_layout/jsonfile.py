"""JSON files on the banks partition (state, boot log) read so that no content can crash the reader: a
size cap, any parse failure (deep nesting included) reported as damage, and the damaged bytes kept aside
once for inspection. Callers decide what damage means for their file."""

from __future__ import annotations

import os

from overlay_layout import durable
from overlay_layout.errors import BankbootError


class Damaged(ValueError, BankbootError):
    """The file exists but is not usable JSON; `raw` holds what was read (None: it could not be read)."""

    def __init__(self, why: str, raw: bytes | None) -> None:
        super().__init__(why)
        self.raw = raw


def read_json(path: str, limit: int) -> tuple[object, bytes] | None:
    """(the parsed content, the bytes read), or None when the file does not exist. The bytes are for
    keep_aside when the caller finds the content of the wrong shape."""
    from overlay_layout import jsontext

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
        return jsontext.loads(raw), raw
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
