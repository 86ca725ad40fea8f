"""The console boot prompt and menu: "Press ESC for the boot menu (Ns)" on every console (serial and
VT); ESC opens a menu of images on that console; digits or arrows + Enter pick one; ESC again boots
`previous`. Consoles are switched to raw input with termios for the wait and restored afterwards."""

from __future__ import annotations

import os
import select
import termios
import time

from initfs import log

ESC = b"\x1b"


def console_devices() -> list[str]:
    """The kernel's active consoles (console= on the command line), as /dev paths."""
    try:
        with open("/sys/class/tty/console/active") as f:
            names = f.read().split()
    except OSError:
        names = []
    devs = [f"/dev/{n}" for n in names if os.path.exists(f"/dev/{n}")]
    return devs or ["/dev/console"]


class RawConsoles:
    def __init__(self) -> None:
        self.fds: dict[int, list] = {}
        for dev in console_devices():
            try:
                fd = os.open(dev, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                saved = termios.tcgetattr(fd)
                raw = termios.tcgetattr(fd)
                raw[3] &= ~(termios.ICANON | termios.ECHO)
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
        ready, _, _ = select.select(list(self.fds), [], [], max(0.0, timeout))
        for fd in ready:
            try:
                return fd, os.read(fd, 16)
            except OSError:
                continue
        return None

    def close(self) -> None:
        for fd, saved in self.fds.items():
            if saved is not None:
                try:
                    termios.tcsetattr(fd, termios.TCSANOW, saved)
                except termios.error:
                    pass
            os.close(fd)
        self.fds = {}


def prompt(entries: list[dict], timeout: float) -> str | None:
    """Wait up to `timeout` for ESC. Returns None (boot as planned), "previous", or an image id."""
    if timeout <= 0:
        return None
    cons = RawConsoles()
    try:
        cons.write(f"Press ESC for the boot menu ({timeout:g}s)\n")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            got = cons.read(left)
            if got and ESC in got[1]:
                return _menu(cons, got[0], entries)
    finally:
        cons.close()


def _menu(cons: RawConsoles, fd: int, entries: list[dict]) -> str | None:
    sel = next((i for i, e in enumerate(entries) if "current" in e["pointers"]), 0)

    def draw() -> None:
        lines = ["", "bankboot boot menu: digits or arrows + Enter to boot an image, ESC for previous", ""]
        for i, e in enumerate(entries):
            mark = ">" if i == sel else " "
            ptr = ",".join(e["pointers"])
            lines.append(f"{mark} {i + 1}) {e['id']:<28} {e.get('version') or '?':<12} {e['state']:<6} "
                         f"{ptr:<16} last boot: {e.get('last_boot') or '-'}")
        cons.write("\n".join(lines) + "\nchoice: ", fd)

    draw()
    while True:
        got = cons.read(3600)
        if not got or got[0] != fd:
            continue
        data = got[1]
        if data in (b"\x1b[A", b"\x1bOA"):
            sel = (sel - 1) % len(entries)
            draw()
        elif data in (b"\x1b[B", b"\x1bOB"):
            sel = (sel + 1) % len(entries)
            draw()
        elif data.startswith(ESC):
            cons.write("previous\n", fd)
            log.log("console menu: ESC, booting previous")
            return "previous"
        elif data[:1] in (b"\r", b"\n"):
            cons.write(f"{entries[sel]['id']}\n", fd)
            return entries[sel]["id"]
        elif data[:1].isdigit() and 1 <= int(data[:1]) <= len(entries):
            sel = int(data[:1]) - 1
            draw()
