"""ed25519 signatures through libsodium, called by the init's `_bankboot` module (overlay_layout/native.py):
no hand-written crypto, and no PyNaCl/cffi to import at boot (their import was most of the init's signature
check). The frozen init carries libsodium.so.23 in its bundle; on a build host it is Debian's libsodium23."""

from __future__ import annotations

import os
import sys

from overlay_layout.errors import BankbootError
from overlay_layout.native import api

PUBLIC_BYTES, SEED_BYTES, SIGNATURE_BYTES, SECRET_BYTES = 32, 32, 64, 64
_NAMES = ("libsodium.so.23", "libsodium.so")
_opened = False


class SodiumError(BankbootError):
    pass


def _load() -> None:
    global _opened
    if _opened:
        return
    bundle = getattr(sys, "_MEIPASS", None)
    candidates = [os.path.join(bundle, n) for n in _NAMES] if bundle else []
    candidates += list(_NAMES)
    errors = []
    for name in candidates:
        try:
            api.open_sodium(name)
            break
        except OSError as e:
            errors.append(str(e))
    else:
        raise SodiumError(f"libsodium cannot be loaded ({'; '.join(errors[-2:])}); on a build host install "
                          f"libsodium23 (make deps does)")
    _opened = True


def library() -> None:
    """Open libsodium once (x25519.py's box and AEAD calls use the same library)."""
    _load()


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `public`'s ed25519 signature of `message`."""
    if len(public) != PUBLIC_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    _load()
    return api.sign_verify(public, message, signature)


def keypair(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, secret key) from a 32-byte seed."""
    if len(seed) != SEED_BYTES:
        raise SodiumError(f"an ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
    _load()
    try:
        return api.sign_keypair(seed)
    except RuntimeError as e:
        raise SodiumError(str(e)) from None


def sign(seed: bytes, message: bytes) -> bytes:
    """The detached ed25519 signature of `message` by the key made from `seed`."""
    _, sk = keypair(seed)
    try:
        return api.sign(message, sk)
    except RuntimeError as e:
        raise SodiumError(str(e)) from None
