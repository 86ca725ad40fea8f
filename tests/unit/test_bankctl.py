"""bankctl's commands against a banks partition in a temp dir: status shows the boot policy's plan,
boot-ok clears the unconfirmed count, and a second bankctl waits for the first (exit 5 when it cannot)."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from initfs import bankctl
from overlay_layout.errors import EXIT_BUSY, EXIT_STAGE
from overlay_layout.state import Banks
from tests.banks import install_first_image


@pytest.fixture
def banks_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_first_image(tmp_path, "1.0.0-a")
    install_first_image(tmp_path, "1.1.0-b")
    Banks(str(tmp_path)).layout.set_pointer("previous", "1.0.0-a")
    for image, version in (("1.0.0-a", "1.0.0"), ("1.1.0-b", "1.1.0")):
        (tmp_path / "overlay" / image / "manifest.json").write_text(
            json.dumps({"version": version, "confirm_boots": True}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "booted").write_text(json.dumps({"image": "1.1.0-b", "trial": False, "warnings": ["w at boot"]}))
    # bankctl's seam for tests: main's banks_root and run_dir (the product reads no variable to move them)
    monkeypatch.setattr(bankctl, "main", partial(bankctl.main, banks_root=str(tmp_path), run_dir=str(run)))
    return tmp_path


def status(capsys) -> dict:
    assert bankctl.main(["status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_shows_the_plan_and_boot_ok_clears_the_count(banks_root: Path, capsys) -> None:
    banks = Banks(str(banks_root))
    for _ in range(2):
        banks.record_boot("1.1.0-b")
    st = status(capsys)
    assert [c["image"] for c in st["plan"]] == ["1.1.0-b", "1.0.0-a"] and st["next_boot"]["image"] == "1.1.0-b"
    assert next(i for i in st["images"] if i["id"] == "1.1.0-b")["unconfirmed_boots"] == 2
    assert "at boot: w at boot" in st["warnings"]
    banks.record_boot("1.1.0-b")  # the third: the next boot gives way to previous
    st = status(capsys)
    assert st["next_boot"]["image"] == "1.0.0-a" and any("3 boots in a row" in w for w in st["warnings"])
    assert bankctl.main(["boot-ok"]) == 0
    assert "boot confirmed" in capsys.readouterr().out
    st = status(capsys)
    assert st["next_boot"]["image"] == "1.1.0-b"
    assert next(i for i in st["images"] if i["id"] == "1.1.0-b")["unconfirmed_boots"] == 0


def test_a_second_bankctl_is_told_the_partition_is_busy(banks_root: Path, capsys, monkeypatch) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; from overlay_layout.lock import lock_banks\n"
                               f"with lock_banks({str(banks_root)!r}):\n print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr("overlay_layout.lock.LOCK_WAIT", 0.2)
        assert bankctl.main(["gc"]) == EXIT_BUSY
        assert "another bankctl" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_log_reads_records_of_any_content(banks_root: Path, capsys) -> None:
    (banks_root / "boot-log.json").write_text(json.dumps([
        {"time": "yesterday", "image": "x"}, {"time": 1e300, "image": "y"}, 7, {"image": "z", "time": 5,
         "tried": [{"image": "a", "why": "current", "error": "cannot boot it: EIO"}], "notes": "a note"}]))
    assert bankctl.main(["log"]) == 0
    out = capsys.readouterr().out
    assert "(no time)" in out and "not booted: a (current): cannot boot it: EIO" in out and "a note" in out
    assert bankctl.main(["log", "--json"]) == 0
    assert [r["image"] for r in json.loads(capsys.readouterr().out)] == ["z", "y", "x"]


def test_a_failed_download_says_failed_and_a_refused_one_refused(banks_root: Path, capsys) -> None:
    """By the error's type (may a retry help?), not by its words."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert bankctl.main(["stage", "--retries", "0", f"http://127.0.0.1:{port}/a.bank"]) == EXIT_STAGE
    assert f"bankctl stage: failed: cannot reach 127.0.0.1:{port}" in capsys.readouterr().err
    assert bankctl.main(["stage", "http://[::1/a.bank"]) == EXIT_STAGE
    assert "bankctl stage: refused: 'http://[::1/a.bank' is not a valid URL: an IPv6 address opened with [ is never " \
           "closed with ]" in capsys.readouterr().err
