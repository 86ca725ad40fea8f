"""bankctl's poll and apply commands as a person meets them, without a network: bad intervals are usage
errors (exit 2), an inhibited or busy device does nothing (exit 3, 5), apply without a download is refused
(exit 4), and status --json shows the device's id and the last poll."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from initfs import bankctl
from overlay_layout import pollstate
from tests.banks import install_first_image


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_first_image(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "booted").write_text(json.dumps({"image": "1.0.0-base", "trial": False}))
    # bankctl's seam for tests: main's banks_root and run_dir (the product reads no variable to move them)
    monkeypatch.setattr(bankctl, "main", partial(bankctl.main, banks_root=str(tmp_path), run_dir=str(run)))
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["--every", "0s"], "polls must be between 1s and 31d apart"),
    (["--every", "1w", "--jitter", "1.5"], "--jitter 1.5: a fraction"),
    (["--every", "2y"], "is not a duration"),
    (["--every", "400d"], "polls must be between"),
])
def test_bad_intervals_are_usage_errors(device: Path, capsys, argv: list[str], message: str) -> None:
    assert bankctl.main(["poll", *argv, "http://127.0.0.1:9/stable.json"]) == 2
    assert message in capsys.readouterr().err


def test_an_inhibited_device_asks_nothing(device: Path, capsys) -> None:
    (device / "run/inhibit").write_text("installing the new firmware of the modem\n")
    assert bankctl.main(["poll", "http://127.0.0.1:9/stable.json"]) == 3
    err = capsys.readouterr().err
    assert f"updates are inhibited by {device}/run/inhibit (installing the new firmware of the modem)" in err
    assert not (device / pollstate.POLL_FILE).exists()


def test_a_busy_device_asks_nothing(device: Path, capsys) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; from overlay_layout.lock import lock_banks\n"
                               f"with lock_banks({str(device)!r}):\n print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert bankctl.main(["poll", "http://127.0.0.1:9/stable.json"]) == 5
        assert "another bankctl (a poll, a stage) is working" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_no_network_is_a_failure_a_later_poll_may_mend(device: Path, capsys) -> None:
    assert bankctl.main(["poll", "--retries", "0", "http://127.0.0.1:9/stable.json"]) == 4
    assert "bankctl poll: failed: cannot reach 127.0.0.1:9" in capsys.readouterr().err
    assert bankctl.main(["poll", "http://[::1/stable.json"]) == 4
    assert "refused: 'http://[::1/stable.json' is not a valid URL" in capsys.readouterr().err


def test_apply_without_a_download_is_refused(device: Path, capsys) -> None:
    assert bankctl.main(["apply"]) == 4
    assert "no complete download to apply (bankctl poll --download-only makes one)" in capsys.readouterr().err


def test_status_shows_the_device_and_its_last_poll(device: Path, capsys) -> None:
    assert bankctl.main(["status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert "device_id" in st and st["poll"] is None
    pollstate.save(str(device), {"format": 1, "url": "http://h/stable.json", "checked": 0, "result": "up to date",
                                 "failed": {}})
    assert bankctl.main(["status"]) == 0
    assert "last poll: 1970-01-01T00:00:00Z http://h/stable.json: up to date" in capsys.readouterr().out


def test_every_spreads_polls_and_backs_off_after_failures(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """--every's schedule: the first poll after a random part of the interval's jitter share, then DURATION
    +-jitter; after polls that failed on the way 30 s, 60 s, 120 s... up to DURATION; a poll that went
    through (or was refused for good) goes back to DURATION; a DDI server's polling sleep (the third item)
    replaces DURATION."""
    import argparse

    from initfs import pollcmd

    outcomes = iter([(4, True, None), (4, True, None), (4, True, None), (4, True, None), (4, True, None),
                     (0, False, None), (4, True, None), (3, False, None), (0, False, 90)])
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) > 9:
            raise KeyboardInterrupt  # as SIGINT ends the loop

    monkeypatch.setattr(pollcmd, "_one", lambda *_a: next(outcomes))
    monkeypatch.setattr(pollcmd.time, "sleep", sleep)
    monkeypatch.setattr(pollcmd.signal, "signal", lambda *_a: None)
    args = argparse.Namespace(every="10m", jitter=0.2)
    from initfs.poll import Options

    assert pollcmd.run_poll(lambda: None, Options("http://h/stable.json"), args) == 0  # type: ignore
    assert "http://h/stable.json every 10m (+-20%)" in capsys.readouterr().err
    first, *rest = waits
    assert 0 <= first <= 0.2 * 600
    expected = [30, 60, 120, 240, 480, 600, 30, 600, 90]  # 5 failures (capped at 600), a success, a failure,
    # refused, a poll whose server asked for 90 s
    assert len(rest) == len(expected)
    for got, base in zip(rest, expected, strict=True):
        assert 0.8 * base <= got <= 1.2 * base, (rest, expected)
    assert len({round(w, 6) for w in rest}) == len(rest)  # jittered: no two waits alike


@pytest.mark.parametrize("argv, message", [
    (["--tenant", "t", "http://127.0.0.1:9/stable.json"], "--tenant, --controller-id and --gateway-token are for a "
                                                           "rollout server"),
    (["--hawkbit", "--channel", "x", "http://127.0.0.1:9"], "no --channel or --download-only"),
    (["--hawkbit", "--controller-id", "a/b", "http://127.0.0.1:9"], "--controller-id 'a/b' is not a name"),
    (["--hawkbit", "--controller-id", "d", "http://[::1"], "opened with [ is never closed with ]"),
])
def test_bad_hawkbit_options_are_usage_errors(device: Path, capsys, argv: list[str], message: str) -> None:
    assert bankctl.main(["poll", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (device / "hawkbit.json").exists()


def test_an_inhibited_device_asks_no_rollout_server(device: Path, capsys) -> None:
    (device / "run/inhibit").write_text("on battery\n")
    assert bankctl.main(["poll", "--hawkbit", "--controller-id", "d", "http://127.0.0.1:9"]) == 3
    assert "updates are inhibited by" in capsys.readouterr().err
    assert not (device / "hawkbit.json").exists()


def test_ddi_tokens_go_to_the_ddi_server_only(tmp_path: Path) -> None:
    from overlay_layout.net.ddi import DdiAuth
    from overlay_layout.net.url import parse_url

    (tmp_path / "t").write_text("gw-secret\n")
    auth = DdiAuth(str(tmp_path / "t"), "GatewayToken")
    auth.bind(parse_url("https://ddi.example.com/DEFAULT/controller/v1/d"))
    auth.bind(parse_url("https://cdn.example.com/a.swu"))  # an artifact's RemoteFile binds nothing new
    assert auth.headers(parse_url("https://ddi.example.com/DEFAULT/controller/v1/d/download")) == \
        [("Authorization", "GatewayToken gw-secret")]
    assert auth.headers(parse_url("https://cdn.example.com/a.swu")) == []
    assert auth.headers(parse_url("http://ddi.example.com/x")) == []  # another origin: plain http
