"""bankctl's `poll` and `apply` commands: the once-or-every loop around poll.poll_once, its exit codes and
messages, and the reboot into a staged trial.

`poll --every DURATION` is a service's loop: it polls after a random part of the first interval (a fleet
that powers up at once does not poll at once), then every DURATION with +-JITTER of it at random; after a
poll that failed on the way (no network, a 5xx) it tries again sooner, 30 s doubling up to DURATION. It
holds the banks lock only while it polls, never while it waits, and ends on SIGTERM or SIGINT (a download
cut then resumes at the next poll)."""

from __future__ import annotations

import os
import signal
import sys
import time

from initfs.poll import Device, PollFailed, Result, poll_once
from overlay_layout.errors import EXIT_BUSY, EXIT_ERROR, EXIT_OK, EXIT_USAGE, BankbootError, verdict
from overlay_layout.lock import LockError
from overlay_layout.utctime import format_duration, parse_duration

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

SHORTEST, LONGEST = 1.0, 31 * 86400.0  # --every
RETRY = 30.0  # the first retry after a poll that failed on the way
DEFAULT_JITTER = 0.2


def _say(line: str) -> None:
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


def _uniform(a: float, b: float) -> float:
    """A random number in [a, b] (os.urandom: the frozen program carries no `random`)."""
    return a + (b - a) * int.from_bytes(os.urandom(4), "big") / 0xFFFFFFFF


def run_poll(make_device: Callable[[], Device], opts: Any, args: argparse.Namespace,
             progress: Callable[[int, int], None] | None = None, once: Callable[..., Result] = poll_once) -> int:
    """`bankctl poll`: once, or every args.every; the exit code of the (last) poll. `once`: poll.poll_once (a
    channel) or hawkbit.hawkbit_once (a DDI server, whose polling sleep, when it names one, sets the
    interval instead of --every)."""
    if args.every is None:
        return _one(make_device, opts, args, progress, once)[0]
    try:
        every = parse_duration(args.every)
    except ValueError as e:
        return _usage(f"--every: {e}")
    if not SHORTEST <= every <= LONGEST:
        return _usage(f"--every {args.every}: polls must be between {format_duration(SHORTEST)} and "
                      f"{format_duration(LONGEST)} apart")
    if not 0 <= args.jitter < 1:
        return _usage(f"--jitter {args.jitter}: a fraction of the interval, from 0 to below 1")

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(EXIT_OK)

    signal.signal(signal.SIGTERM, stop)
    _say(f"bankctl poll: {getattr(opts, 'url', None) or opts.base} every {format_duration(every)} "
         f"(+-{args.jitter:.0%})")
    failures = 0
    wait = _uniform(0, every * max(args.jitter, 0.05))
    try:
        while True:
            time.sleep(wait)
            _, transient, server = _one(make_device, opts, args, progress, once)
            failures = failures + 1 if transient else 0
            interval = float(server) if server else every
            base = min(interval, RETRY * 2 ** (failures - 1)) if failures else interval
            wait = base * _uniform(1 - args.jitter, 1 + args.jitter)
    except KeyboardInterrupt:
        return EXIT_OK


def _usage(message: str) -> int:
    print(f"bankctl poll: {message}", file=sys.stderr)
    return EXIT_USAGE


def _one(make_device: Callable[[], Device], opts: Any, args: argparse.Namespace,
         progress: Callable[[int, int], None] | None,
         once: Callable[..., Result] = poll_once) -> tuple[int, bool, int | None]:
    """One poll: (exit code, whether a retry soon may do better, the server's polling interval if it named
    one)."""
    try:
        dev = make_device()
        result = once(dev, opts, _say, progress)
    except LockError:
        _say("bankctl poll: another bankctl (a poll, a stage) is working on the banks partition: not polling now")
        return EXIT_BUSY, False, None
    except BankbootError as e:  # NotNow, StateError (3); PollFailed, DownloadError, StageError (4); a damaged layout
        _say(f"bankctl poll: {verdict(e)}{e}")
        return e.exit_code, e.transient, None
    except OSError as e:
        _say(f"bankctl poll: {e}")
        return EXIT_ERROR, True, None
    print(f"{result.summary} (this poll: {result.requests} request{'s' if result.requests != 1 else ''}, "
          f"{result.received} bytes received)", flush=True)
    server = result.interval
    if result.action in ("staged", "pending") and opts.reboot:
        return reboot(args.reboot_command), False, server
    if result.action == "staged":
        print("reboot to try it (bankctl poll --reboot does)", flush=True)
    return EXIT_OK, False, server


def reboot(command: str) -> int:
    """Run the image's reboot command with the environment bankctl was started with."""
    from initfs.switchroot import clean_environ

    argv = command.split()
    print(f"rebooting into the trial ({command})", flush=True)
    try:
        pid = os.posix_spawnp(argv[0], argv, clean_environ())
    except OSError as e:
        _say(f"bankctl poll: staged, but the reboot command {command!r} failed: {e.strerror or e}")
        return EXIT_ERROR
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        _say(f"bankctl poll: staged, but the reboot command {command!r} exited with "
             f"{os.waitstatus_to_exitcode(status)}")
        return EXIT_ERROR
    return EXIT_OK  # the system is going down (a poll loop ends with it)


def run_apply(apply: Callable[[], dict[str, object]], args: argparse.Namespace) -> int:
    """`bankctl apply`: the complete download becomes next on trial; --reboot then reboots into it."""
    m = apply()
    print(f"staged {m['id']} (version {m['version']}, {m['_signed_by']}) as next, on trial with {args.tries} tries",
          flush=True)
    if args.reboot:
        return reboot(args.reboot_command)
    print("reboot to try it", flush=True)
    return EXIT_OK


__all__ = ["PollFailed", "Result", "reboot", "run_apply", "run_poll"]
