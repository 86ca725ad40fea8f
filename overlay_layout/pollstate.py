"""poll.json on the banks partition: what `bankctl poll` remembers between polls.

- the channel document it last took, with its URL and ETag, so the next poll asks `If-None-Match` and a
  304 costs the server one short answer (the document is checked again from here, signature and expiry
  included: a 304 never makes an expired document good);
- the newest publish time it has seen (`clock`): the earliest the time can be, on a board whose clock
  starts in 1970, so an expired document stays expired;
- the images that failed here (a trial that fell back), so a channel that still offers one does not
  send the device into the same failing trial at every poll;
- the last poll's result, for `bankctl status`.

It is written only after a poll took a document (staged it, or found nothing to do): a document or a bank
refused, or a poll that failed on the way, changes nothing on the device. Written whole through
durable.write_file; read without crashing whatever it holds (damage reads as a fresh start)."""

from __future__ import annotations

import os

from overlay_layout import durable, jsontext
from overlay_layout.jsontext import Damaged, read_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

POLL_FILE = "poll.json"
FORMAT = 1
MAX_BYTES = 256 << 10
KEEP_FAILED = 16


def poll_path(root: str) -> str:
    return os.path.join(root, POLL_FILE)


def read_record(path: str, max_bytes: int, fmt: int) -> dict[str, Any]:
    """A poller's record file (this one, the hawkBit client's): a missing, damaged or other-format file reads
    as a fresh record, and its `failed` map is always a dict."""
    try:
        got = read_json(path, max_bytes)
    except Damaged:
        got = None
    st = got[0] if got is not None else None
    if not isinstance(st, dict) or st.get("format") != fmt:
        return {"format": fmt, "failed": {}}
    if not isinstance(st.get("failed"), dict):
        st["failed"] = {}
    return st


def load(root: str) -> dict[str, Any]:
    """The poll state; a missing or damaged file reads as empty (the next poll fetches the document whole)."""
    st = read_record(poll_path(root), MAX_BYTES, FORMAT)
    for key, kind in (("url", str), ("etag", str), ("document", str), ("clock", int), ("published", int)):
        if key in st and not isinstance(st[key], kind):
            del st[key]
    return st


def save(root: str, st: dict[str, Any]) -> None:
    failed = st.get("failed", {})
    st["failed"] = dict(list(failed.items())[-KEEP_FAILED:])
    durable.write_file(poll_path(root), jsontext.dumps(st, sort_keys=True).encode() + b"\n")


def clock(st: dict[str, Any]) -> int:
    return int(st.get("clock", 0))
