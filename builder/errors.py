"""The one base of the build host's errors (builder/, builder/lab/, builder/firmware/).

One base, the device's `BankbootError`, so that `bankboot`'s main tells a user's error (a bad board file, a
missing tool, a guest command that failed in the lab: print the message, exit with its `exit_code`, 1) from a
bug (anything else: its traceback) by type, never by the builtin class a module happened to pick. Each module
keeps its own subclass for callers that catch one stage's errors; a class that was a ValueError (or an
AssertionError in the lab) keeps that as a second base, so the callers and tests that catch it still do.
tests/unit/test_builder_errors.py checks that every exception class under builder/ derives from it."""

from __future__ import annotations

from overlay_layout.errors import EXIT_ERROR, BankbootError


class BuildError(BankbootError):
    """Something a user of `bankboot` must fix, or a step on the build host that failed (exit 1)."""

    exit_code = EXIT_ERROR


class ImageError(BuildError):
    """Everything `bankboot image` raises for a user to fix (image, imagekernel, imagetree and pack share it)."""
