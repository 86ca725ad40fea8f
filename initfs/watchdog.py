"""The hardware watchdog during a trial: armed by the init, left running across the exec (closing it
without the magic 'V' does not stop it), so a trial that hangs is reset by the hardware and the next boot
counts it. `bankctl mark-good` disarms it unless the image has taken it over (systemd does)."""

from __future__ import annotations

import fcntl
import os
import struct

from overlay_layout.contract import WATCHDOG_STATE

WDIOC_SETTIMEOUT = 0xC0045706
DEVICE = "/dev/watchdog"
STATE = WATCHDOG_STATE


def arm(seconds: int) -> str:
    if not os.path.exists(DEVICE):
        return "no watchdog device"
    fd = os.open(DEVICE, os.O_WRONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", seconds))
        except OSError:
            pass
        os.write(fd, b"\0")
    finally:
        os.close(fd)  # no 'V': it keeps counting
    with open(STATE, "w") as f:
        f.write(f"{seconds}\n")
    return f"watchdog armed for {seconds} s"


def kept_across_kexec() -> bool:
    """Whether the kernel leaves a running watchdog running through a kexec: its reboot notifier stops
    every watchdog unless watchdog.stop_on_reboot=0 was on the command line."""
    try:
        with open("/sys/module/watchdog/parameters/stop_on_reboot") as f:
            return f.read().strip() == "0"
    except OSError:
        return False


def disarm() -> bool:
    if not os.path.exists(STATE) or not os.path.exists(DEVICE):
        return False
    try:
        fd = os.open(DEVICE, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False  # busy: the image's own watchdog daemon holds it
    try:
        os.write(fd, b"V")
    finally:
        os.close(fd)
    os.unlink(STATE)
    return True
