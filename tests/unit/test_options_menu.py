"""Command-line options (typed, bounded, warned) and the console menu's key parsing, without a VM."""

from __future__ import annotations

import time

import pytest

from initfs.cmdline import Cmdline
from initfs.menu import KeyParser, prompt
from initfs.options import Options


@pytest.mark.parametrize("text, key, value", [
    ("rootdelay=-1", "rootdelay", 0.0),
    ("bankboot.timeout=inf", "bankboot.timeout", 0.1),
    ("bankboot.timeout=nan", "bankboot.timeout", 0.1),
    ("bankboot.watchdog=inf", "bankboot.watchdog", 0),
    ("bankboot.watchdog=1e9", "bankboot.watchdog", 0),
    ("bankboot.selftest_timeout=-5", "bankboot.selftest_timeout", 60.0),
    ("bankboot.rescue=maybe", "bankboot.rescue", None),
    ("bankboot.roottimeout=", "bankboot.roottimeout", 30.0),
    ("bankboot.unconfirmed_boots=0", "bankboot.unconfirmed_boots", None),
])
def test_a_bad_value_is_a_warning_naming_the_option_and_the_default_is_used(text, key, value) -> None:
    opts = Options(Cmdline(f"console=ttyAMA0 {text}"))
    assert opts.get(key) == value
    assert len(opts.warnings) == 1 and key in opts.warnings[0] and "default" in opts.warnings[0]


def test_good_values_are_typed() -> None:
    opts = Options(Cmdline("root=/dev/vda2 rootwait bankboot.timeout=5 bankboot.watchdog=30 bankboot.rescue=shell"))
    assert (opts.get("root"), opts.get("rootwait"), opts.get("bankboot.timeout")) == ("/dev/vda2", True, 5.0)
    assert opts.get("bankboot.watchdog") == 30 and opts.get("bankboot.rescue") == "shell" and not opts.warnings


def test_board_defaults_apply_unless_the_command_line_says_otherwise() -> None:
    assert Options(Cmdline(""), {"bankboot.rescue": "reboot"}).get("bankboot.rescue") == "reboot"
    assert Options(Cmdline("bankboot.rescue=shell"), {"bankboot.rescue": "reboot"}).get("bankboot.rescue") == "shell"


def test_an_unknown_bankboot_key_names_the_nearest_known_one() -> None:
    opts = Options(Cmdline("bankboot.selecct=previous quiet"))
    assert opts.warnings == ["unknown option bankboot.selecct on the kernel command line (ignored); "
                             "did you mean bankboot.select?"]


def test_keys_are_parsed_per_key_not_per_read() -> None:
    p = KeyParser()
    assert p.feed(b"\x1b\x1b", final=True) == ["esc", "esc"]  # a fast double press in one read
    assert p.feed(b"\x1b[A\x1b[B\r7", final=True) == ["up", "down", "enter", "7"]
    assert p.feed(b"\x00\xff~zq\x1b[5~", final=True) == []  # noise and unknown keys are dropped
    assert p.feed(b"\x1b") == [] and p.feed(b"[") == [] and p.feed(b"B") == ["down"]  # split across reads
    assert p.feed(b"\x1b") == [] and p.feed(b"", final=True) == ["esc"]


class FakeConsole:
    """Bytes arrive at given times (seconds after the start) on console fd 5."""

    def __init__(self, script: list[tuple[float, bytes]]) -> None:
        self.start = time.monotonic()
        self.script = list(script)
        self.out = ""

    def write(self, text: str, fd: int | None = None) -> None:
        self.out += text

    def close(self) -> None:
        self.closed = True

    def read(self, timeout: float):
        if self.script:
            at, data = self.script[0]
            wait = at - (time.monotonic() - self.start)
            if wait <= timeout:
                time.sleep(max(0.0, wait))
                self.script.pop(0)
                return 5, data
        time.sleep(timeout)
        return None


ENTRIES = [{"id": "a", "version": "1", "state": "good", "pointers": ["current"]},
           {"id": "b", "version": "2", "state": "good", "pointers": ["previous"]}]


def test_two_escs_in_one_read_open_the_menu_and_pick_previous() -> None:
    assert prompt(ENTRIES, 1.0, 5.0, FakeConsole([(0.05, b"\x1b\x1b")])) == "previous"


def test_line_noise_never_stops_the_boot() -> None:
    noise = [(0.01 * i, bytes([i % 256, 0x41])) for i in range(1, 40) if i != 0x1b]
    start = time.monotonic()
    assert prompt(ENTRIES, 0.5, 0.5, FakeConsole(noise)) is None
    assert time.monotonic() - start < 2.0


def test_the_menu_times_out_and_boots_as_planned() -> None:
    start = time.monotonic()
    assert prompt(ENTRIES, 1.0, 0.3, FakeConsole([(0.05, b"\x1b")])) is None
    assert time.monotonic() - start < 1.5


def test_digits_and_enter_pick_an_image() -> None:
    assert prompt(ENTRIES, 1.0, 5.0, FakeConsole([(0.02, b"\x1b"), (0.2, b"2"), (0.3, b"\r")])) == "b"


def test_keys_typed_while_modules_load_count_though_the_window_has_closed(monkeypatch) -> None:
    """listen() opens the window as the init starts; prompt() comes after modules load, maybe after the
    window's end: what was typed meanwhile (waiting in the console) still opens the menu."""
    from initfs import menu

    cons = FakeConsole([(0.0, b"\x1b\x1b")])  # typed at once, while "modules load"
    monkeypatch.setattr(menu, "RawConsoles", lambda: cons)
    menu.listen(0.1)
    assert "Press ESC for the boot menu" in cons.out
    time.sleep(0.2)  # the window is over before the init gets to the prompt
    assert menu.prompt(ENTRIES, 0.1, 5.0) == "previous"
    menu.listen(0.1)  # nothing typed: no wait left, boots as planned
    cons.script = []
    time.sleep(0.15)
    started = time.monotonic()
    assert menu.prompt(ENTRIES, 0.1, 5.0) is None and time.monotonic() - started < 0.05
