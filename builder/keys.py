"""`bankboot keygen`: an ed25519 key pair for signing images, or (--encryption) an X25519 key pair a device or
fleet decrypts encrypted banks with (libsodium, as the device uses them)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from overlay_layout.trust import PRIVATE_TAG, PUBLIC_TAG, key_id


def keygen(prefix: Path, comment: str = "", encryption: bool = False) -> tuple[Path, Path, str]:
    from overlay_layout import ed25519, x25519
    from overlay_layout import encryption as enc

    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for p in (private, public):
        if p.exists():
            raise FileExistsError(f"{p} exists already; not overwriting a key")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(ed25519.SEED_BYTES)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{enc.PRIVATE_TAG if encryption else PRIVATE_TAG} {base64.b64encode(seed).decode()}\n")
    if encryption:
        pub = x25519.keypair(seed)[0]
        public.write_text(f"{enc.PUBLIC_TAG} {base64.b64encode(pub).decode()} {comment or prefix.name}\n")
        return private, public, key_id(pub)
    text = public_key_text(seed, comment or prefix.name)
    public.write_text(text)
    return private, public, key_id(ed25519.keypair(seed)[0])


def public_key_text(seed: bytes, comment: str) -> str:
    """The .pub file's line for the key pair of this private seed."""
    from overlay_layout import ed25519

    pub, _ = ed25519.keypair(seed)
    return f"{PUBLIC_TAG} {base64.b64encode(pub).decode()} {comment}\n"
