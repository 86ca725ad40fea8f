"""overlay_layout/native.py: a build host's Python (no `_bankboot`) gets the ctypes stand-in; a frozen program
without `_bankboot` (a libpython other than builder/leanpython.py's) is refused naming the build fault, as
the freeze carries no ctypes to fall back on."""

from __future__ import annotations

import importlib
import sys

import pytest

from overlay_layout import hostnative, native


def test_a_host_python_gets_the_stand_in() -> None:
    assert "_bankboot" not in sys.builtin_module_names
    assert native.api is hostnative


def test_a_frozen_program_without_the_module_is_a_build_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    try:
        with pytest.raises(ImportError, match="no _bankboot module .*a build fault.*builder/leanpython.py"):
            importlib.reload(native)
    finally:
        monkeypatch.delattr(sys, "frozen")
        importlib.reload(native)
    assert native.api is hostnative
