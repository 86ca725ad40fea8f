"""manifest.json: what an image is. Written by `bankboot image`, checked wherever it is read."""

from __future__ import annotations

import json

from overlay_layout.layout import LayoutError, check_id

FIELDS = {"id": str, "version": str, "arch": str, "size": int, "sha256": str, "created": str}
FORMAT = 1
VERITY_FIELDS = {"root_hash": str, "salt": str, "hash_algorithm": str, "data_block_size": int,
                 "hash_block_size": int, "size": int, "sha256": str}


def parse_manifest(data: bytes, where: str) -> dict:
    try:
        m = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise LayoutError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(m, dict):
        raise LayoutError(f"{where}: must be a JSON object")
    if m.get("format") != FORMAT:
        raise LayoutError(f"{where}: unknown manifest format {m.get('format')!r} (this bankboot reads {FORMAT})")
    for key, kind in FIELDS.items():
        if not isinstance(m.get(key), kind) or isinstance(m.get(key), bool):
            raise LayoutError(f"{where}: {key!r} must be a {kind.__name__}")
    check_id(m["id"])
    if len(m["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in m["sha256"]):
        raise LayoutError(f"{where}: 'sha256' must be 64 lowercase hex digits")
    if m["size"] <= 0:
        raise LayoutError(f"{where}: 'size' must be positive")
    v = m.get("verity")
    if v is not None:
        if not isinstance(v, dict):
            raise LayoutError(f"{where}: 'verity' must be an object")
        for key, kind in VERITY_FIELDS.items():
            if not isinstance(v.get(key), kind) or isinstance(v.get(key), bool):
                raise LayoutError(f"{where}: 'verity.{key}' must be a {kind.__name__}")
        for key in ("root_hash", "salt", "sha256"):
            if any(c not in "0123456789abcdef" for c in v[key]):
                raise LayoutError(f"{where}: 'verity.{key}' must be lowercase hex")
    if "confirm_boots" in m and not isinstance(m["confirm_boots"], bool):
        raise LayoutError(f"{where}: 'confirm_boots' must be true or false")
    for key in ("min_bankboot", "key", "signature"):
        if key in m and not isinstance(m[key], str):
            raise LayoutError(f"{where}: {key!r} must be a string")
    return m


def dump_manifest(m: dict) -> bytes:
    """Canonical bytes: sorted keys, no spaces, one trailing newline."""
    return json.dumps(m, sort_keys=True, separators=(",", ":")).encode() + b"\n"
