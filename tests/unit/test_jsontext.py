"""overlay_layout/jsontext.py must read and write exactly what json does: the canonical manifest bytes that
signatures cover are written by it, and every file the boot reads is parsed by it."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay_layout import jsontext

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_dumps_is_json_dumps_compact_and_loads_reads_it_back(value: object) -> None:
    for sort in (False, True):
        assert jsontext.dumps(value, sort_keys=sort) == json.dumps(value, sort_keys=sort, separators=(",", ":"))
        assert jsontext.dumps(value, sort_keys=sort, spaced=True) == json.dumps(value, sort_keys=sort)
    text = json.dumps(value, indent=1)
    assert jsontext.loads(text) == json.loads(text)
    assert jsontext.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("bad", [b"", b" ", b"{", b"[1,]", b"[1] x", b"NaN", b"[Infinity]", b"\xff\xfe", b"'a'",
                                 b"{\"a\" 1}", b"tru"])
def test_what_is_not_json_is_a_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        jsontext.loads(bad)


def test_deep_nesting_is_a_recursion_error_not_a_crash() -> None:
    with pytest.raises(RecursionError):
        jsontext.loads("[" * 100_000 + "]" * 100_000)


def test_what_json_cannot_write_is_refused_and_the_next_call_still_works() -> None:
    with pytest.raises(TypeError, match="set"):
        jsontext.dumps({"a": {1, 2}})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        jsontext.dumps(loop)
    assert jsontext.dumps({"a": [1]}) == '{"a":[1]}'
    assert jsontext.dumps(math.pi) == json.dumps(math.pi)
