"""Pictures of a boot: the init's timeline (/run/bankboot/timeline.json, `bankctl timeline --json`) and
`make bench`'s phases, drawn as an SVG bar chart so a person sees where the time goes. Plain SVG text:
no plotting library on the build host."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from builder.errors import BuildError

COLOURS = ("#3b6ea8", "#c8702a", "#5a9a4a", "#9a4a8a", "#8a8a3a")
ROW, LABEL, WIDTH, TOP = 18, 300, 1000, 40


class TimelineError(BuildError, ValueError):
    pass


def read_timeline(path: Path) -> list[dict]:
    """The steps of a timeline.json (the init's, or a `bankctl timeline --json` list)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TimelineError(f"{path}: not a timeline ({e})") from None
    steps = data.get("steps") if isinstance(data, dict) else data
    if not isinstance(steps, list) or not all(isinstance(s, dict) and {"step", "start", "end"} <= s.keys()
                                              for s in steps):
        raise TimelineError(f"{path}: expected a list of steps with step, start and end")
    return steps


def render_svg(groups: list[tuple[str, list[dict]]], title: str) -> str:
    """groups: (label, steps); each group's times are its own clock, drawn from its first start."""
    rows = sum(len(steps) + 1 for _, steps in groups)
    span = max((float(s["end"]) - float(steps[0]["start"]) for _, steps in groups if steps for s in steps),
               default=1.0) or 1.0
    scale = (WIDTH - LABEL - 20) / span
    height = TOP + rows * ROW + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" '
           f'font-size="11">', f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']
    tick = next(t for t in (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 1e9) if span / t <= 12)
    n = 0
    while n * tick <= span:
        x = LABEL + n * tick * scale
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{height - 25}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle">{n * tick:g} s</text>')
        n += 1
    y = TOP
    for i, (label, steps) in enumerate(groups):
        colour = COLOURS[i % len(COLOURS)]
        out.append(f'<text x="10" y="{y + 12}" font-weight="bold">{escape(label)}</text>')
        y += ROW
        origin = float(steps[0]["start"]) if steps else 0.0
        for s in steps:
            start, end = float(s["start"]) - origin, float(s["end"]) - origin
            took = end - start
            out.append(f'<text x="20" y="{y + 12}">{escape(str(s["step"]))[:44]}</text>')
            x = LABEL + start * scale
            if took > 0:
                out.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{max(took * scale, 1):.1f}" height="{ROW - 6}" '
                           f'fill="{colour}"><title>{escape(str(s["step"]))}: {took * 1000:.0f} ms</title></rect>')
                out.append(f'<text x="{x + max(took * scale, 1) + 4:.1f}" y="{y + 12}">{took * 1000:.0f} ms</text>')
            else:
                out.append(f'<rect x="{x - 1:.1f}" y="{y + 1}" width="2" height="{ROW - 2}" fill="#000"/>')
                out.append(f'<text x="{x + 4:.1f}" y="{y + 12}">{start:.2f} s</text>')
            y += ROW
    out.append("</svg>")
    return "\n".join(out) + "\n"


def phases(times: dict[str, float], order: list[str]) -> list[dict]:
    """Consecutive phases between console markers ("kernel ran /init", "banner", ...), from QEMU start."""
    steps, last, prev = [], 0.0, "QEMU start"
    for label in order:
        if label in times:
            steps.append({"step": f"{prev} -> {label}", "start": last, "end": times[label]})
            last, prev = times[label], label
    return steps
