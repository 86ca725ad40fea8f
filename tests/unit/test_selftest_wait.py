"""initfs/selftest._run_one waits for a check by its SIGCHLD (sigtimedwait), not by polling: the check's
exit status is what it reports, a check past its timeout is killed with its process group, and the signal
mask is put back (the check itself runs with SIGCHLD unblocked). Chrooted in "/" (root's right to chroot)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from initfs import selftest

pytestmark = pytest.mark.unit


def _check(tmp: Path, body: str) -> str:
    f = tmp / "check"
    f.write_text("#!/bin/sh\n" + body + "\n")
    f.chmod(0o755)
    return str(f)


def test_a_check_that_passes_and_one_that_fails(tmp_path: Path) -> None:
    selftest._run_one("/", _check(tmp_path, "exit 0"), 10)
    with pytest.raises(selftest.SelfTestError, match="failed with exit status 3"):
        selftest._run_one("/", _check(tmp_path, "sleep 0.2; exit 3"), 10)
    assert signal.SIGCHLD not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_the_check_runs_with_sigchld_unblocked(tmp_path: Path) -> None:
    # SigBlk in /proc/self/status: bit 16 (SIGCHLD = 17) clear in the check's own mask.
    out = tmp_path / "mask"
    selftest._run_one("/", _check(tmp_path, f"grep SigBlk /proc/self/status > {out}"), 10)
    assert not int(out.read_text().split()[1], 16) & (1 << (signal.SIGCHLD - 1))


def test_a_check_past_its_timeout_is_killed(tmp_path: Path) -> None:
    with pytest.raises(selftest.SelfTestError, match="did not finish within 1 s"):
        selftest._run_one("/", _check(tmp_path, "sleep 30"), 0.6)
    assert signal.SIGCHLD not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
