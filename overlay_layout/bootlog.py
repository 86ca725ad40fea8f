"""The boot log on the banks partition: one record per boot, newest last, the last 100 kept. Rewritten
whole through durable.write_file, so a power cut leaves the old log or the new one. A log of any content
is read without crashing: records that are not flat objects are dropped, a file that is not a list of
them is damage (a warning, a copy kept beside it, and a new log)."""

from __future__ import annotations

import json
import os

from overlay_layout import durable

LOG_FILE = "boot-log.json"
KEEP = 100
MAX_BYTES = 4 << 20
_SCALARS = (str, int, float, bool, type(None))


def log_path(root: str) -> str:
    return os.path.join(root, LOG_FILE)


def _clean(record: object) -> dict | None:
    """A record is an object of scalars, or of objects of scalars (fallback_from, tried)."""
    if not isinstance(record, dict):
        return None
    return {key: value for key, value in record.items() if _flat(value)}


def _flat(value: object) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, dict):
        return all(isinstance(v, _SCALARS) for v in value.values())
    return isinstance(value, list) and all(isinstance(v, dict) and _flat(v) for v in value)


def read_log(root: str, warnings: list[str] | None = None) -> list[dict]:
    path = log_path(root)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as e:
        if warnings is not None:
            warnings.append(f"cannot read {path}: {e.strerror}")
        return []
    try:
        if len(raw) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        records = json.loads(raw)
        if not isinstance(records, list):
            raise ValueError("not a list of records")
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        if warnings is not None:
            kept = _keep_damaged(path, raw)
            warnings.append(f"{path} is damaged ({str(e)[:120]}); starting a new log{kept}")
        return []
    return [r for r in (_clean(x) for x in records) if r is not None]


def _keep_damaged(path: str, raw: bytes) -> str:
    copy = f"{path}.damaged"
    try:
        if not os.path.exists(copy):
            durable.write_file(copy, raw[:MAX_BYTES])
        return f" (a copy is kept in {copy})"
    except OSError:
        return ""


def append_record(root: str, record: dict, warnings: list[str] | None = None) -> None:
    records = read_log(root, warnings)
    if records:
        last = records[-1]
        record.setdefault("previous_boot", last.get("outcome", "unknown (no word from that boot)"))
    records.append(record)
    durable.write_file(log_path(root), json.dumps(records[-KEEP:], indent=1).encode() + b"\n")


def set_outcome(root: str, outcome: str) -> None:
    """What became of the latest boot (mark-good, mark-bad, boot-ok): read by the next boot's record."""
    records = read_log(root)
    if records:
        records[-1]["outcome"] = outcome
        durable.write_file(log_path(root), json.dumps(records[-KEEP:], indent=1).encode() + b"\n")
