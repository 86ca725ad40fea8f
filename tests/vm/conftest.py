from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm.devices import make_device


@pytest.fixture(scope="session")
def device(aarch64, test_dir: Path, built_initramfs, signing_key):
    """The base disk (1.0.0 current) and the update banks, built once per session."""
    return make_device(aarch64, test_dir, built_initramfs, signing_key)
