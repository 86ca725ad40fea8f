"""The policy's runtime records (collections.namedtuple, cheap to import in the init) and their typed twins
in overlay_layout/records.py (what the type checker sees) must be the same records."""

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


def test_states_are_the_typed_literal() -> None:
    assert set(typed.State.__args__) == {runtime.GOOD, runtime.TRIAL, runtime.BAD}
