"""Messages from the init: to the console (our stdout, which the kernel opened on /dev/console) and into
the kernel log (/dev/kmsg, so `dmesg` on the booted system shows them), stamped with the time since the
kernel started, like the kernel's own lines."""

from __future__ import annotations

import os
import sys
import time

_kmsg_fd: int | None = None
debug = False
stepping = False  # bankboot.step: wait for Enter on the console before each step


def uptime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


started = uptime()  # our first Python code runs (the PyInstaller bootloader and Python's start-up are before)
# Every step's start and end, in seconds since the kernel started (CLOCK_BOOTTIME): written to
# /run/bankboot/timeline.json before the hand-over, shown by `bankctl timeline` and drawn by
# `bankboot timeline` and `make bench`.
timeline: list[dict[str, object]] = [{"step": "python start-up done", "start": round(started, 4),
                                      "end": round(started, 4)}]


def mark(name: str) -> None:
    """An instant on the timeline."""
    t = round(uptime(), 4)
    timeline.append({"step": name, "start": t, "end": t})


def open_kmsg() -> None:
    """After /dev is mounted. Level 7 (debug) keeps the kernel from echoing our lines to the console a
    second time at the default console loglevel."""
    global _kmsg_fd
    try:
        _kmsg_fd = os.open("/dev/kmsg", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        _kmsg_fd = None


def log(msg: str, level: int = 6) -> None:
    prefix = "bankboot: " if level > 3 else "bankboot: ERROR: "
    for line in msg.splitlines() or [""]:
        text = f"[{uptime():12.6f}] {prefix}{line}\n"
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError:
            pass
        if _kmsg_fd is not None:
            try:
                os.write(_kmsg_fd, f"<7>{prefix}{line}\n".encode(errors="replace"))
            except OSError:
                pass


def error(msg: str) -> None:
    log(msg, level=3)


class step:
    """`with step("load modules"):` prints how long the step took when bankboot.debug is set."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> step:
        if stepping:
            log(f"step: {self.name}: press Enter to run it")
            try:
                sys.stdin.readline()
            except OSError:
                pass
        self.start = uptime()
        if debug:
            log(f"{self.name} ...")
        return self

    def __exit__(self, *exc: object) -> None:
        end = uptime()
        timeline.append({"step": self.name, "start": round(self.start, 4), "end": round(end, 4)})
        if debug:
            log(f"{self.name}: {1000 * (end - self.start):.1f} ms")
