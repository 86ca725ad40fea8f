"""The boot timeline: what the init records, `bankctl timeline`, and the SVG picture."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from builder.lab.timeline import TimelineError, phases, read_timeline, render_svg
from initfs import bankctl, log


def test_steps_and_marks_are_recorded_in_order_on_the_boot_clock() -> None:
    before = len(log.timeline)
    with log.step("load modules"):
        pass
    log.mark("banner")
    got = log.timeline[before:]
    assert [s["step"] for s in got] == ["load modules", "banner"]
    assert got[0]["start"] <= got[0]["end"] <= got[1]["start"] == got[1]["end"]


def test_bankctl_timeline_prints_each_step(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "banks/overlay").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    steps = [{"step": "load modules", "start": 1.5, "end": 1.75}, {"step": "hand-over", "start": 2.0, "end": 2.0}]
    (tmp_path / "run/timeline.json").write_text(json.dumps({"steps": steps}))
    dirs = {"banks_root": str(tmp_path / "banks"), "run_dir": str(tmp_path / "run")}
    assert bankctl.main(["timeline"], **dirs) == 0
    out = capsys.readouterr().out
    assert "250.0ms  load modules" in out and "hand-over" in out
    (tmp_path / "run/timeline.json").write_text("{")
    assert bankctl.main(["timeline"], **dirs) == 1


def test_the_picture_is_svg_with_a_bar_per_step(tmp_path: Path) -> None:
    steps = [{"step": "python start-up done", "start": 1.0, "end": 1.0},
             {"step": "load <modules>", "start": 1.1, "end": 1.4}, {"step": "mount", "start": 1.4, "end": 1.5}]
    (tmp_path / "t.json").write_text(json.dumps({"steps": steps}))
    base = phases({"kernel ran /init": 1.0, "banner": 1.2, "image init up": 1.6}, ["kernel ran /init", "banner",
                                                                                  "image init up"])
    assert [s["step"] for s in base] == ["QEMU start -> kernel ran /init", "kernel ran /init -> banner",
                                         "banner -> image init up"]
    svg = render_svg([("ours", read_timeline(tmp_path / "t.json")), ("baseline", base)], "a <boot>")
    root = ET.fromstring(svg)  # well-formed, names escaped
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "load <modules>" in texts and "300 ms" in texts and "a <boot>" in texts
    assert len(list(root.iter("{http://www.w3.org/2000/svg}rect"))) == 6
    (tmp_path / "bad.json").write_text('{"steps": [{"step": 1}]}')
    with pytest.raises(TimelineError, match="expected a list of steps"):
        read_timeline(tmp_path / "bad.json")
