from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.vm.devices import make_device


@pytest.fixture(scope="session")
def device(aarch64, test_dir: Path, built_initramfs, signing_key):
    """The base disk (1.0.0 current) and the update banks, built once per session."""
    return make_device(aarch64, test_dir, built_initramfs, signing_key)


@pytest.fixture(scope="session")
def sealed_initramfs(device, trust_policy) -> Path:
    """The device's initramfs built sealed (bankboot initramfs --sealed), once per session."""
    from builder.initramfs import build_initramfs

    sealed = dataclasses.replace(device.board, sealed=True)
    return build_initramfs(sealed, device.out / "sealed-initramfs.img", policy=trust_policy).path
