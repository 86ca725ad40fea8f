"""The console boot prompt and menu: "Press ESC for the boot menu (Ns)" on every console (serial and
VT); ESC opens a menu of images on that console; digits or arrows + Enter pick one; ESC again boots
`previous`. Consoles are switched to raw input with termios for the wait and restored afterwards.

Input is parsed key by key, not read by read: two ESCs in one read are two presses, an arrow key's
escape sequence is one key, and anything else (line noise on a serial line) is ignored. The menu boots
as planned after `menu_timeout` seconds without a key, so noise that looks like ESC cannot stop a boot."""

from __future__ import annotations

import os
import select
import time

from initfs import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from overlay_layout.records import MenuEntry

ESC = 0x1B
SEQ_WAIT = 0.05  # an ESC followed by nothing for this long is the ESC key, not the start of a sequence
ARROWS = {ord("A"): "up", ord("B"): "down"}


class KeyParser:
    """Bytes in, keys out: "esc", "up", "down", "enter", "1".."9". Unknown bytes are dropped."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes, final: bool = False) -> list[str]:
        """`final`: no more bytes are coming soon, so a lone trailing ESC is the ESC key."""
        self.buf += data
        keys: list[str] = []
        while self.buf:
            b = self.buf[0]
            if b == ESC:
                if len(self.buf) == 1:
                    if not final:
                        break
                    keys.append("esc")
                    del self.buf[:1]
                elif self.buf[1] in (ord("["), ord("O")):
                    if len(self.buf) == 2 and not final:
                        break
                    # CSI/SS3: ESC [ params final-byte (0x40-0x7e)
                    end = next((i for i in range(2, min(len(self.buf), 16)) if 0x40 <= self.buf[i] <= 0x7E), None)
                    if end is None:
                        if len(self.buf) < 16 and not final:
                            break
                        del self.buf[:2]  # a broken sequence: drop its start
                        continue
                    key = ARROWS.get(self.buf[end]) if end == 2 else None
                    if key:
                        keys.append(key)
                    del self.buf[:end + 1]
                else:
                    keys.append("esc")
                    del self.buf[:1]
            elif b in (0x0D, 0x0A):
                keys.append("enter")
                del self.buf[:1]
            elif 0x31 <= b <= 0x39:
                keys.append(chr(b))
                del self.buf[:1]
            else:
                del self.buf[:1]
        return keys


def console_devices() -> list[str]:
    """The kernel's active consoles (console= on the command line), as /dev paths."""
    try:
        with open("/sys/class/tty/console/active") as f:
            names = f.read().split()
    except OSError:
        names = []
    devs = [f"/dev/{n}" for n in names if os.path.exists(f"/dev/{n}")]
    return devs or ["/dev/console"]


def open_consoles() -> list[int]:
    """The console devices that open (read-write, not as our controlling tty, non-blocking)."""
    fds = []
    for dev in console_devices():
        try:
            fds.append(os.open(dev, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK))
        except OSError:
            continue
    return fds


class RawConsoles:
    def __init__(self) -> None:
        import termios

        self.fds: dict[int, list[Any] | None] = {}
        for fd in open_consoles():
            try:
                saved = termios.tcgetattr(fd)
                raw = termios.tcgetattr(fd)
                # No flow control either: line noise holding an XOFF (0x13) would stop the console's output,
                # and whatever writes to it next (we, or the image's init) would block for ever.
                raw[0] &= ~(termios.IXON | termios.IXOFF)
                raw[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG)
                raw[6][termios.VMIN] = 1
                raw[6][termios.VTIME] = 0
                termios.tcsetattr(fd, termios.TCSANOW, raw)
                termios.tcflush(fd, termios.TCIFLUSH)
            except termios.error:
                saved = None
            self.fds[fd] = saved

    def write(self, text: str, fd: int | None = None) -> None:
        for f in [fd] if fd is not None else list(self.fds):
            try:
                os.write(f, text.replace("\n", "\r\n").encode())
            except OSError:
                pass

    def read(self, timeout: float) -> tuple[int, bytes] | None:
        if not self.fds:
            time.sleep(max(0.0, timeout))
            return None
        ready, _, _ = select.select(list(self.fds), [], [], max(0.0, timeout))
        for fd in ready:
            try:
                return fd, os.read(fd, 256)
            except OSError:
                continue
        return None

    def close(self) -> None:
        import termios

        for fd, saved in self.fds.items():
            try:
                termios.tcflush(fd, termios.TCIFLUSH)  # nothing typed (or noise) reaches the image's shell
                termios.tcflow(fd, termios.TCOON)  # output restarted, should anything have stopped it
                if saved is not None:
                    termios.tcsetattr(fd, termios.TCSANOW, saved)
            except termios.error:
                pass
            os.close(fd)
        self.fds = {}


class Keys:
    """Keys from a byte source `read(timeout) -> (fd, bytes) | None`, parsed per console."""

    def __init__(self, read: Callable[[float], tuple[int, bytes] | None]) -> None:
        self.read = read
        self.parsers: dict[int, KeyParser] = {}
        self.queue: list[tuple[int, str]] = []

    def drain(self) -> None:
        """Take in what is already waiting in the consoles, without waiting: keys typed earlier in the
        window still count when the window has closed by the time the init asks."""
        while (got := self.read(0)) is not None:
            fd, data = got
            if not data:
                break
            self.queue += [(fd, k) for k in self.parsers.setdefault(fd, KeyParser()).feed(data)]
        for fd, p in self.parsers.items():
            self.queue += [(fd, k) for k in p.feed(b"", final=True)]

    def next(self, deadline: float, only: int | None = None) -> tuple[int, str] | None:
        while True:
            for i, (fd, key) in enumerate(self.queue):
                if only is None or fd == only:
                    del self.queue[i]
                    return fd, key
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            pending = any(p.buf for p in self.parsers.values())
            got = self.read(min(left, SEQ_WAIT) if pending else left)
            if got is None:
                for fd, p in self.parsers.items():
                    self.queue += [(fd, k) for k in p.feed(b"", final=True)]
                continue
            fd, data = got
            if not data:
                continue
            self.queue += [(fd, k) for k in self.parsers.setdefault(fd, KeyParser()).feed(data)]


# The window opened as the init starts (listen): its consoles and when it ends.
_early: tuple[RawConsoles, float] | None = None


def listen(timeout: float) -> None:
    """Open the window as the init starts: the consoles go raw and the prompt is shown at once, so a key
    pressed while modules load and the banks partition mounts waits in the tty, and prompt() later waits
    only for what is left of `timeout`. A boot costs no fixed wait."""
    global _early
    if timeout > 0 and _early is None:
        cons = RawConsoles()
        cons.write(f"Press ESC for the boot menu ({timeout:g}s)\n")
        _early = (cons, time.monotonic() + timeout)


def flush_input() -> None:
    """Drop what was typed at the consoles and not read: ESC pressed for a menu this boot does not offer (a
    kexec's second stage, a window of 0) must not reach the image's shell or getty as the start of an escape
    sequence that eats its next keys."""
    import termios

    for fd in open_consoles():
        try:
            termios.tcflush(fd, termios.TCIFLUSH)
        except termios.error:
            pass
        finally:
            os.close(fd)


def stop_listening() -> None:
    """Close the window's consoles (input flushed, modes restored): before a rescue shell or a select=."""
    global _early
    if _early is not None:
        _early[0].close()
        _early = None


def prompt(entries: list[MenuEntry] | Callable[[], list[MenuEntry]], timeout: float,
           menu_timeout: float = 30.0, cons: RawConsoles | None = None) -> str | None:
    """Wait for ESC until the window closes (`timeout` from listen(), or from now when it was not opened
    early). Returns None (boot as planned), "previous", or an image id."""
    global _early
    if timeout <= 0:
        return None
    own = cons is None
    if cons is None and _early is not None:
        cons, deadline = _early
        _early = None
    else:
        cons = RawConsoles() if cons is None else cons
        cons.write(f"Press ESC for the boot menu ({timeout:g}s)\n")
        deadline = time.monotonic() + timeout
    try:
        keys = Keys(cons.read)
        keys.drain()
        got = None
        while (got := keys.next(deadline)) is not None and got[1] != "esc":
            pass
        if got is None:
            return None
        return _menu(cons, keys, got[0], entries() if callable(entries) else entries, menu_timeout)
    finally:
        if own:
            cons.close()


def _menu(cons: RawConsoles, keys: Keys, fd: int, entries: list[MenuEntry], menu_timeout: float) -> str | None:
    if not entries:
        return None
    sel = next((i for i, e in enumerate(entries) if "current" in e["pointers"]), 0)

    def draw() -> None:
        lines = ["", "bankboot boot menu: digits or arrows + Enter to boot an image, ESC for previous "
                 f"(boots as planned after {menu_timeout:g}s without a key)", ""]
        for i, e in enumerate(entries):
            mark = ">" if i == sel else " "
            ptr = ",".join(e["pointers"])
            lines.append(f"{mark} {i + 1}) {e['id']:<28} {e.get('version') or '?':<12} {e['state']:<7} "
                         f"{ptr:<16} last boot: {e.get('last_boot') or '-'}")
        cons.write("\n".join(lines) + "\nchoice: ", fd)

    draw()
    while True:
        got = keys.next(time.monotonic() + menu_timeout, only=fd)
        if got is None:
            cons.write("no key: booting as planned\n", fd)
            log.log(f"console menu: no key for {menu_timeout:g} s, booting as planned")
            return None
        key = got[1]
        if key == "up":
            sel = (sel - 1) % len(entries)
            draw()
        elif key == "down":
            sel = (sel + 1) % len(entries)
            draw()
        elif key == "esc":
            cons.write("previous\n", fd)
            log.log("console menu: ESC, booting previous")
            return "previous"
        elif key == "enter":
            cons.write(f"{entries[sel]['id']}\n", fd)
            return str(entries[sel]["id"])
        elif key.isdigit() and 1 <= int(key) <= len(entries):
            sel = int(key) - 1
            draw()
