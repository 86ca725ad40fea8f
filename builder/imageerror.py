"""The one error `bankboot image` raises for everything a user must fix (its modules share it)."""

from __future__ import annotations


class ImageError(RuntimeError):
    pass
