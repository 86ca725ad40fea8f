"""The boot policy as a pure function: the candidates of one boot, in order, with their reasons."""

from __future__ import annotations

from overlay_layout.policy import BAD, GOOD, TRIAL, ImageInfo, Snapshot, plan_boot


def snap(current="a", next=None, previous=None, damaged=(), **images) -> Snapshot:
    infos = {}
    for image, spec in images.items():
        infos[image] = ImageInfo(image, **spec)
    return Snapshot(current, next, previous, infos, tuple(damaged))


def order(plan) -> list[str]:
    return [c.image for c in plan.candidates]


def kinds(plan) -> list[str]:
    return [e.kind for e in plan.effects]


def test_trial_first_then_current_previous_and_other_good_images_newest_first() -> None:
    s = snap("b", "c", "a", a={"state": GOOD, "version": "1.0.0"}, b={"state": GOOD, "version": "2.0.0"},
             c={"state": TRIAL, "tries": 2, "version": "3.0.0"}, old={"state": GOOD, "version": "0.5.0"},
             older={"state": GOOD, "version": "0.4.0"}, broken={"state": BAD, "reason": "x", "version": "9.0.0"})
    plan = plan_boot(s)
    assert order(plan) == ["c", "b", "a", "old", "older", "broken"]
    assert plan.candidates[0].trial and "1 tries left" in plan.candidates[0].why
    assert plan.candidates[-1].why.startswith("last resort (marked bad")
    assert kinds(plan) == ["spend_try"]


def test_a_trial_without_tries_is_marked_bad_and_stays_a_last_resort() -> None:
    plan = plan_boot(snap("a", "c", a={"state": GOOD}, c={"state": TRIAL, "tries": 0}))
    assert order(plan) == ["a", "c"] and plan.candidates[1].why == "last resort (marked bad in this boot)"
    assert kinds(plan) == ["mark_bad"]


def test_a_good_next_rolls_forward_and_old_current_becomes_previous() -> None:
    plan = plan_boot(snap("a", "b", None, a={"state": GOOD}, b={"state": GOOD}))
    assert order(plan) == ["b", "a"] and kinds(plan) == ["roll_forward"]


def test_selection_replaces_the_trial_and_spends_nothing() -> None:
    s = snap("b", "c", "a", a={"state": GOOD}, b={"state": GOOD}, c={"state": TRIAL, "tries": 3})
    plan = plan_boot(s, "previous")
    assert order(plan) == ["a", "b"] and "spend_try" not in kinds(plan)
    plan = plan_boot(s, "next")
    assert plan.candidates[0].trial and kinds(plan) == ["spend_try"]


def test_selecting_what_does_not_exist_boots_as_usual_with_a_note() -> None:
    s = snap("a", a={"state": GOOD})
    for select in ("previous", "nosuch-image"):
        plan = plan_boot(s, select)
        assert order(plan) == ["a"] and plan.notes


def test_a_damaged_or_dangling_current_pointer_is_replaced_by_the_newest_good_image() -> None:
    s = snap(None, None, "a", damaged=("current",), a={"state": GOOD, "committed": 1},
             b={"state": GOOD, "committed": 5})
    plan = plan_boot(s)
    assert order(plan) == ["b", "a"]
    assert kinds(plan) == ["drop_pointer", "repoint_current"]
    plan = plan_boot(snap("gone", None, "a", a={"state": GOOD}))
    assert order(plan) == ["a"] and "not on the banks partition" in plan.notes[0]


def test_unconfirmed_boots_fall_back_to_previous_only_for_images_that_ask() -> None:
    asks = snap("b", None, "a", a={"state": GOOD}, b={"state": GOOD, "confirm": True, "unconfirmed": 3})
    plan = plan_boot(asks, unconfirmed_limit=3)
    assert order(plan) == ["a", "b"] and plan.candidates[1].why.startswith("last resort")
    assert kinds(plan) == ["demote"] and "3 boots in a row" in plan.effects[0].reason
    assert order(plan_boot(asks, unconfirmed_limit=4)) == ["b", "a"]
    silent = snap("b", None, "a", a={"state": GOOD}, b={"state": GOOD, "unconfirmed": 50})
    assert order(plan_boot(silent)) == ["b", "a"]
    no_previous = snap("b", b={"state": GOOD, "confirm": True, "unconfirmed": 9})
    assert order(plan_boot(no_previous)) == ["b"]


def test_nothing_on_the_partition_means_no_candidates() -> None:
    assert plan_boot(snap(None)).candidates == []
