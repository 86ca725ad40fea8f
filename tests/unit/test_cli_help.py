"""Every option of both command-line tools says what it does (`--help` is the first manual people read)."""

from __future__ import annotations

import argparse

import pytest

from builder.cli import build_parser as bankboot_parser
from initfs.bankctl import build_parser as bankctl_parser


def _undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _undocumented(sub, f"{path} {name}")
            for choice in action._choices_actions:
                if not choice.help:
                    missing.append(f"{path} {choice.dest} (the command)")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


@pytest.mark.parametrize("name, parser", [("bankboot", bankboot_parser), ("bankctl", bankctl_parser)])
def test_every_option_has_help(name: str, parser) -> None:
    assert _undocumented(parser(), name) == []


def test_an_option_without_help_is_reported() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    sub.add_parser("go", help="go").add_argument("--fast")
    assert _undocumented(p, "tool") == ["tool go --fast"]
