"""The soak's planner and checker (builder/lab/soak.py) without QEMU: which events it picks on which device state,
what it lets come up after each, and what it calls a failure."""

from __future__ import annotations

import json
import random
from collections import Counter

from builder.lab.soak import (
    REPORT_COMMAND,
    WEIGHTS,
    GuestReport,
    Image,
    Snapshot,
    applicable,
    check,
    choose_event,
    expected,
    format_table,
    outcome_of,
    parse_report,
    planned,
)

A, B, T, S, N = "1.0.0-aaaa", "2.0.1-bbbb", "2.0.2-tttt", "2.0.2-ssss", "2.0.2-nnnn"
KINDS = {A: "good", B: "good", T: "good", S: "selftest-fails", N: "never-commits"}
VERSIONS = {A: "1.0.0", B: "2.0.1", T: "2.0.2", S: "2.0.2", N: "2.0.2"}


def snap(current=B, previous=A, nxt=None, running=None, trial=False, tries=3, next_state="trial") -> Snapshot:
    images = {A: Image(A, "1.0.0", "good", None, ()), B: Image(B, "2.0.1", "good", None, ())}
    if nxt:
        images[nxt] = Image(nxt, VERSIONS[nxt], next_state, tries, ("next",))
    return Snapshot(current, previous, nxt, running or current, trial, images)


def status_of(s: Snapshot, signed: bool = True) -> dict:
    return {"pointers": {"current": s.current, "previous": s.previous, "next": s.next},
            "booted": {"image": s.running, "trial": s.running_trial, "signed_by": "key 1" if signed else None},
            "images": [{"id": i.id, "version": i.version, "state": i.state, "tries": i.tries,
                        "pointers": list(i.pointers)} for i in s.images.values()]}


def report_of(s: Snapshot, userdata: dict[str, str] | None = None, version: str | None = None) -> GuestReport:
    return GuestReport(version or VERSIONS[s.running], f"/run/bankboot/volatile/{s.running}/upper",
                       status_of(s)["booted"], dict(userdata or {}), False, status_of(s))


def test_updates_only_on_a_settled_device_and_mark_bad_only_on_a_trial() -> None:
    settled = applicable(snap())
    assert {"update-good", "update-selftest-fails", "update-never-commits", "cut-stage", "rollback",
            "reset"} <= set(settled)
    assert "mark-bad" not in settled
    on_trial = applicable(snap(nxt=N, running=N, trial=True, tries=2))
    assert "mark-bad" in on_trial and not any(e.startswith("update") or e == "rollback" for e in on_trial)
    assert "esc-previous" not in applicable(snap(previous=None)) and "rollback" not in applicable(snap(previous=None))


def test_the_mix_is_seeded_and_covers_every_event() -> None:
    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [choose_event(s, rng) for s in [snap(), snap(nxt=N, running=N, trial=True)] * 300]

    assert run(5) == run(5)
    assert run(5) != run(6)
    assert set(run(5)) == set(WEIGHTS)


def test_what_a_plain_boot_must_bring_up() -> None:
    assert planned(snap(), KINDS) == {B}
    assert planned(snap(nxt=T), KINDS) == {T}  # a good trial boots (and commits itself)
    assert planned(snap(nxt=S), KINDS) == {B}  # its self-test fails: current in the same boot
    assert planned(snap(nxt=N, tries=1), KINDS) == {N}
    assert planned(snap(nxt=N, tries=0), KINDS) == {B}  # tries spent
    assert planned(snap(nxt=A, next_state="good"), KINDS) == {A}  # a rollback pending rolls forward
    assert planned(snap(nxt=S, next_state="bad"), KINDS) == {B}


def test_what_each_event_lets_come_up() -> None:
    s = snap()
    assert expected(s, "update-good", KINDS, staged=T) == {T}
    assert expected(s, "update-selftest-fails", KINDS, staged=S) == {B}
    assert expected(s, "update-never-commits", KINDS, staged=N) == {N}
    assert expected(s, "cut-stage", KINDS, staged=T) == {B, T}
    assert expected(s, "rollback", KINDS) == {A}
    assert expected(s, "esc-previous", KINDS) == {A}
    assert expected(snap(previous=None), "esc-previous", KINDS) == {B}  # no previous: as planned
    assert expected(s, "esc-menu", KINDS, chosen=A) == {A}
    trial = snap(nxt=N, running=N, trial=True, tries=2)
    assert expected(trial, "mark-bad", KINDS) == {B}
    assert expected(trial, "cut-boot", KINDS) == {N, B}
    assert expected(trial, "reboot", KINDS) == {N}
    assert expected(s, "gc", KINDS) == expected(s, "cut-gc", KINDS) == expected(s, "reset", KINDS) == {B}


def test_a_good_device_passes_the_check() -> None:
    s = snap()
    assert check(report_of(s, {"f1": "ab"}), {B}, VERSIONS, {"f1": "ab"}) == []


def test_the_check_names_each_way_a_device_can_be_wrong() -> None:
    s = snap()
    assert "is up, expected" in check(report_of(s), {A}, VERSIONS, {})[0]
    assert "sample-version says 9.9.9" in check(report_of(s, version="9.9.9"), {B}, VERSIONS, {})[0]
    assert "lost or changed" in check(report_of(s, {"f1": "00"}), {B}, VERSIONS, {"f1": "ab"})[0]
    assert "lost or changed" in check(report_of(s, {}), {B}, VERSIONS, {"f1": "ab"})[0]
    r = report_of(s)
    r.root_upper = f"/run/bankboot/volatile/{A}/upper"
    assert "root overlay" in check(r, {B}, VERSIONS, {})[0]
    r = report_of(s)
    r.booted = {**r.booted, "signed_by": None}
    assert "not verified as signed" in check(r, {B}, VERSIONS, {})[0]
    r = report_of(s)
    r.reset_mark = True
    assert "reset was not done" in check(r, {B}, VERSIONS, {}, reset_done=True)[0]
    assert check(r, {B}, VERSIONS, {}) == []
    bad = snap()
    bad.images[B] = Image(B, "2.0.1", "bad", None, ())
    assert any("not good" in p for p in check(report_of(bad), {B}, VERSIONS, {}))
    left = snap(nxt=S, next_state="bad")
    assert "gc left 2.0.2-ssss" in check(report_of(left), {B}, VERSIONS, {}, kept={A, B})[0]


def test_the_guest_report_is_read_past_kernel_lines() -> None:
    s = snap()
    status = json.dumps(status_of(s), indent=1).splitlines()
    status.insert(3, "[   12.345678] hrtimer: interrupt took 1234 ns")
    out = ("@@V 2.0.1\r\n@@ROOT rw,relatime,lowerdir=/run/bankboot/lower,upperdir=/run/bankboot/volatile/"
           f"{B}/upper,workdir=/x\n@@B {json.dumps(status_of(s)['booted'])}\n@@U ab12  f1\n@@S\n"
           + "\n".join(status) + "\n")
    r = parse_report(out)
    assert r.version == "2.0.1" and r.root_upper.endswith(f"{B}/upper") and r.userdata == {"f1": "ab12"}
    assert not r.reset_mark and r.status["pointers"]["current"] == B
    assert check(r, {B}, VERSIONS, {"f1": "ab12"}) == []
    assert "bankctl status --json" in REPORT_COMMAND and "/proc/mounts" in REPORT_COMMAND


def test_outcomes_and_the_table() -> None:
    s = snap()
    committed = Snapshot(T, B, None, T, False, s.images)
    assert outcome_of(s, committed, "update-good", False) == "committed"
    assert outcome_of(s, Snapshot(A, B, None, A, False, s.images), "rollback", False) == "rolled back"
    assert outcome_of(snap(nxt=S), s, "reboot", False) == "fell back"
    assert outcome_of(s, s, "update-selftest-fails", False) == "fell back"
    assert outcome_of(s, s, "cut-stage", False) == "same image"
    assert outcome_of(s, snap(nxt=N, running=N, trial=True), "update-never-commits", False) == "on trial"
    assert outcome_of(s, snap(running=A), "esc-previous", False) == "other image (one boot)"
    assert outcome_of(s, s, "rollback", True) == "refused"
    table = format_table(1, 3, 5, 30.0, {"rollback": Counter({"rolled back": 2}), "gc": Counter({"same image": 1})})
    assert "seed 1, 3 cycles, 5 boots" in table and table.splitlines()[-1].split()[:2] == ["total", "3"]


def test_a_failed_update_left_as_next_does_not_block_the_next_update() -> None:
    assert "update-good" in applicable(snap(nxt=S, next_state="bad"))
    assert "update-good" not in applicable(snap(nxt=N, tries=2))


def test_a_trial_that_committed_itself_is_no_longer_a_trial() -> None:
    committed = snap(current=T, previous=B, running=T)
    committed.images[T] = Image(T, "2.0.2", "good", None, ("current",))
    status = status_of(committed)
    status["booted"]["trial"] = True  # how the boot started
    s = Snapshot.from_status(status)
    assert not s.running_trial and "mark-bad" not in applicable(s) and "update-good" in applicable(s)
    on_trial = snap(nxt=N, running=N, trial=True)
    assert Snapshot.from_status(status_of(on_trial)).running_trial
