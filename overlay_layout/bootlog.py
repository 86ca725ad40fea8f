"""The boot log on the banks partition: one record per boot, newest last, the last 100 kept. Rewritten
whole through durable.write_file, so a power cut leaves the old log or the new one."""

from __future__ import annotations

import json
import os

from overlay_layout import durable

LOG_FILE = "boot-log.json"
KEEP = 100


def log_path(root: str) -> str:
    return os.path.join(root, LOG_FILE)


def read_log(root: str) -> list[dict]:
    try:
        with open(log_path(root), "rb") as f:
            records = json.loads(f.read())
        return records if isinstance(records, list) else []
    except (OSError, ValueError):
        return []


def append_record(root: str, record: dict) -> None:
    records = read_log(root)
    if records:
        last = records[-1]
        record.setdefault("previous_boot", last.get("outcome", "unknown (no word from that boot)"))
    records.append(record)
    durable.write_file(log_path(root), json.dumps(records[-KEEP:], indent=1).encode() + b"\n")


def set_outcome(root: str, outcome: str) -> None:
    """What became of the latest boot (mark-good, mark-bad, self-test): read by the next boot's record."""
    records = read_log(root)
    if records:
        records[-1]["outcome"] = outcome
        durable.write_file(log_path(root), json.dumps(records[-KEEP:], indent=1).encode() + b"\n")
