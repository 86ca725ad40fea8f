"""Helpers for the channel and poll tests: a release key, bank files of two releases that share most of
their chunks, a device (a banks partition in a temp dir with 1.0.0 committed, the policy trusting the key),
and a snapshot of everything on the device to prove that a refused poll changed nothing."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from builder.keys import keygen
from initfs.poll import Device, Options, poll_once
from overlay_layout.net.transport import Settings
from overlay_layout.stage import stage
from overlay_layout.state import Banks
from overlay_layout.trust import Policy, key_id, read_private_key, read_public_key
from tests.banks import make_bank

BOARD = "qemu-aarch64"
MACHINE = "aarch64"


class Release:
    """The release key and bank files 1.0.0 and 1.1.0 (1.1.0 changes a few chunks of 1.0.0)."""

    def __init__(self, root: Path, size: int = 3 << 20) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.key, self.pub = root / "release.key", root / "release.pub"
        if not self.key.exists():
            keygen(root / "release", "tests")
        self.seed = read_private_key(str(self.key))
        public = read_public_key(str(self.pub))
        self.policy = Policy({key_id(public): public}, allow_unsigned=False, allow_downgrade=False)
        base = random.Random(7).randbytes(size)
        changed = bytearray(base)
        for at in (size // 5, size // 2, size - 5000):
            changed[at:at + 3000] = random.Random(at).randbytes(3000)
        self.banks: dict[str, Path] = {}
        self.ids: dict[str, str] = {}
        for version, payload in (("1.0.0", base), ("1.1.0", bytes(changed)), ("1.2.0", bytes(changed[::-1]))):
            path = root / f"app-{version}.bank"
            self.ids[version] = make_bank(path, version, payload, arch="arm64", chunked=True, seed=self.seed)
            self.banks[version] = path


def bank_fields(bank: Path, image: str, channel: str = "stable") -> dict:
    """The channel document's fields for a bank file, as publish writes them (valid for a day from now)."""
    import time

    from builder.publish import channel_fields, read_release

    manifest, raw, _, _ = read_release(bank)
    assert manifest["id"] == image
    return channel_fields(manifest, raw, bank.stat().st_size, channel, [BOARD], time.time(), 86400)


def make_device(root: Path, release: Release, booted: dict | None = None, board: str = BOARD,
                retries: int = 0) -> Device:
    """A device whose banks partition is `root` (1.0.0 staged from its bank file and committed, made once)."""
    banks = Banks(str(root))
    if not (root / "overlay").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        (root / "etc").mkdir()
        (root / "etc/machine-id").write_text(hashlib.sha256(str(root).encode()).hexdigest()[:32] + "\n")
        m = stage(banks, str(release.banks["1.0.0"]), release.policy, "9.9.9", machine=MACHINE)
        banks.mark_good(m["id"])
    settings = Settings(retries=retries, timeout=5.0, connect_timeout=3.0, environ={})
    return Device(Banks(str(root)), release.policy, board, "9.9.9", booted if booted is not None else {}, settings,
                  root=str(root), machine=MACHINE)


def poll(dev: Device, url: str, said: list[str] | None = None, **options: object):
    return poll_once(dev, Options(url, **options), (said.append if said is not None else lambda _l: None))


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file, directory and link under `root` with its content (the lock file aside)."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel == ".lock":
                continue
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out
