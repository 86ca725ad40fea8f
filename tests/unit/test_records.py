"""The runtime records (overlay_layout/recordtype.py, cheap to import in the init) and their typed twins
(overlay_layout/records.py and initfs/options.py's, what the type checker sees) must be the same records."""

from __future__ import annotations

import pytest

import overlay_layout.policy as runtime
import overlay_layout.records as typed


@pytest.mark.parametrize("name", ["ImageInfo", "Snapshot", "Candidate", "Effect"])
def test_runtime_records_match_their_typed_twins(name: str) -> None:
    r, t = getattr(runtime, name), getattr(typed, name)
    assert r is not t
    assert r._fields == t._fields
    assert r._field_defaults == t._field_defaults


def test_the_walks_record_matches_its_typed_twin() -> None:
    from overlay_layout.state import Chosen

    assert Chosen._fields == typed.Chosen._fields
    assert Chosen._field_defaults == typed.Chosen._field_defaults


def test_roles_and_effect_kinds_are_the_typed_literals() -> None:
    assert set(typed.Role.__args__) == {runtime.SELECTED, runtime.ON_TRIAL, runtime.PINNED, runtime.CURRENT,
                                        runtime.PREVIOUS, runtime.OTHER_GOOD, runtime.LAST_RESORT}
    assert set(typed.EffectKind.__args__) == {runtime.SPEND_TRY, runtime.MARK_BAD, runtime.CLEAR_NEXT,
                                              runtime.ROLL_FORWARD, runtime.DEMOTE, runtime.REPOINT_CURRENT,
                                              runtime.DROP_POINTER}


def test_states_are_the_typed_literal() -> None:
    assert set(typed.State.__args__) == {runtime.GOOD, runtime.TRIAL, runtime.BAD}



def test_the_option_record_matches_its_typed_twin() -> None:
    import initfs.options as options

    assert options.Option._fields == typed.Option._fields
    assert options.Option._field_defaults == typed.Option._field_defaults
