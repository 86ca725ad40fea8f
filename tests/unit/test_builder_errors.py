"""The build host's errors share the device's base (builder/errors.py): every exception class defined under
builder/ derives from BankbootError, so `bankboot`'s main prints a user's error with its exit code and lets
anything else (a bug) show its traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from argparse import ArgumentParser, Namespace
from collections.abc import Callable

import pytest

import builder
from builder import cli
from builder.errors import BuildError
from overlay_layout.errors import EXIT_ERROR, BankbootError


def builder_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(builder.__path__, "builder."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_every_builder_error_derives_from_bankboot_error() -> None:
    found = builder_exception_classes()
    assert len(found) > 30 and "builder.board.BoardError" in found and "builder.lab.rig.GuestError" in found
    assert not sorted(name for name, cls in found.items() if not issubclass(cls, BankbootError))


def run_main(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> int:
    def fail(args: Namespace) -> int:
        raise error

    monkeypatch.setattr(cli, "build_parser", lambda: _parser(fail))
    return cli.main(["boards"])


def _parser(func: Callable[[Namespace], int]) -> ArgumentParser:
    """A parser with one command that raises: main's handling alone, none of the real commands."""
    p = ArgumentParser(prog="bankboot")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("boards").set_defaults(func=func)
    return p


def test_main_prints_a_users_error_and_exits_with_its_code(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    class Refused(BuildError):
        exit_code = 3

    assert run_main(monkeypatch, BuildError("board x: no kernel")) == EXIT_ERROR
    assert capsys.readouterr().err == "bankboot boards: board x: no kernel\n"
    assert run_main(monkeypatch, Refused("not now")) == 3
    assert run_main(monkeypatch, FileNotFoundError(2, "No such file or directory", "x.toml")) == EXIT_ERROR
    assert "x.toml" in capsys.readouterr().err


def test_main_lets_a_bug_show_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyError):
        run_main(monkeypatch, KeyError("a bug"))
    with pytest.raises(ValueError, match="a plain ValueError"):
        run_main(monkeypatch, ValueError("a plain ValueError is a bug now"))
