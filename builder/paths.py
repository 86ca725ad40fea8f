"""Where things live on the build host."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def build_dir() -> Path:
    """build/ in the project, or $BANKBOOT_BUILD."""
    return Path(os.environ.get("BANKBOOT_BUILD", PROJECT / "build")).resolve()


def cache_dir() -> Path:
    """Downloads and unpacked packages, frozen inits: kept across `make clean`-free rebuilds."""
    return build_dir() / "cache"
