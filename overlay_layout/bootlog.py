"""The boot log on the banks partition: one record per boot, newest last, the last 100 kept. Rewritten
whole through durable.write_file, so a power cut leaves the old log or the new one. A log of any content
is read without crashing: records that are not flat objects are dropped, a file that is not a list of
them is damage (a warning, a copy kept beside it, and a new log)."""

from __future__ import annotations

import os

from overlay_layout import durable, jsontext
from overlay_layout.jsontext import Damaged, keep_aside, read_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.records import BootRecord

LOG_FILE = "boot-log.json"
KEEP = 100
MAX_BYTES = 4 << 20
_SCALARS = (str, int, float, bool, type(None))


def log_path(root: str) -> str:
    return os.path.join(root, LOG_FILE)


def _clean(record: object) -> BootRecord | None:
    """A record is an object of scalars, or of objects of scalars (fallback_from, tried)."""
    if not isinstance(record, dict):
        return None
    return {key: value for key, value in record.items() if _flat(value)}  # type: ignore[return-value]


def _flat(value: object) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, dict):
        return all(isinstance(v, _SCALARS) for v in value.values())
    return isinstance(value, list) and all(isinstance(v, dict) and _flat(v) for v in value)


def read_log(root: str, warnings: list[str] | None = None) -> list[BootRecord]:
    path = log_path(root)
    try:
        got = read_json(path, MAX_BYTES)
        if got is not None and not isinstance(got[0], list):
            raise Damaged("not a list of records", got[1])
    except Damaged as e:
        if warnings is not None:
            copy = keep_aside(path, e.raw, MAX_BYTES)
            kept = f" (a copy is kept in {copy})" if copy else ""
            warnings.append(f"{path} is damaged ({str(e)[:120]}); starting a new log{kept}")
        return []
    if got is None or not isinstance(got[0], list):
        return []
    return [r for r in (_clean(x) for x in got[0]) if r is not None]


def dump_log(records: list[BootRecord]) -> bytes:
    """One record per line: people can read it, and the compact C encoder writes it (an indented dump goes
    through json's pure-Python encoder, slow on a board with 100 records to rewrite at every boot)."""
    return ("[\n" + ",\n".join(jsontext.dumps(r) for r in records) + "\n]\n").encode()


def is_plain(record: BootRecord) -> bool:
    """A boot of the committed image that changed nothing: no trial, no fallback, nothing repaired or noted,
    no unconfirmed boot counted. Its record is the one write of that boot and nothing decides on it, so the
    init does not wait for it to reach the disk (append_record's `wait`)."""
    return (not record.get("trial") and not record.get("tried") and not record.get("fallback_from")
            and "notes" not in record and "unconfirmed_boots" not in record)


def append_record(root: str, record: BootRecord, warnings: list[str] | None = None, wait: bool = True) -> None:
    """wait=False (durable.write_file): for a boot that changed nothing, whose record a power cut in the next
    seconds may lose (never the log)."""
    records = read_log(root, warnings)
    if records:
        last = records[-1]
        record.setdefault("previous_boot", last.get("outcome", "unknown (no word from that boot)"))
    records.append(record)
    durable.write_file(log_path(root), dump_log(records[-KEEP:]), wait=wait)


def set_outcome(root: str, outcome: str) -> None:
    """What became of the latest boot (mark-good, mark-bad, boot-ok): read by the next boot's record."""
    records = read_log(root)
    if records:
        records[-1]["outcome"] = outcome
        durable.write_file(log_path(root), dump_log(records[-KEEP:]))
