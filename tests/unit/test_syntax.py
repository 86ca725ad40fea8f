"""The boot path checks names and versions without `re` (overlay_layout/contract.py): the checks must accept
and refuse exactly what the regular expressions they replaced did, for ASCII input."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay_layout.contract import is_absolute_path, is_name, split_semver
from overlay_layout.layout import is_image_id

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
PERSIST_RE = re.compile(r"^(/[A-Za-z0-9._+@-]+)+$")
RELEASE_RE = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
SEMVER_RE = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-([0-9A-Za-z.-]+))?"
                       r"(?:\+([0-9A-Za-z.-]+))?$")

# Mostly the characters that matter, so the interesting boundaries come up often.
text = st.text(alphabet="aZ09._+-@/ \n\x00é", max_size=140)
versions = st.text(alphabet="0123456789.-+aZ", max_size=20)


@settings(max_examples=2000, deadline=None)
@given(text)
def test_names_and_paths_match_the_old_patterns(s: str) -> None:
    assert is_image_id(s) == bool(ID_RE.fullmatch(s))
    assert is_absolute_path(s) == bool(PERSIST_RE.fullmatch(s))
    assert is_name(s, 64) == bool(RELEASE_RE.fullmatch(s))


@settings(max_examples=3000, deadline=None)
@given(versions)
def test_versions_split_as_the_old_pattern_did(s: str) -> None:
    m = SEMVER_RE.fullmatch(s)
    got = split_semver(s)
    if m is None:
        assert got is None
    else:
        major, minor, patch, pre, build = m.groups()
        assert got == (int(major), int(minor), int(patch), pre, build)


def test_known_versions() -> None:
    assert split_semver("1.2.3-rc.1+build.5") == (1, 2, 3, "rc.1", "build.5")
    assert split_semver("1.2.3-a-b") == (1, 2, 3, "a-b", None)
    for bad in ("01.2.3", "1.2", "1.2.3-", "1.2.3+", "1.2.3+a+b", "\u0661.2.3", "1.2.3 "):
        assert split_semver(bad) is None, bad
