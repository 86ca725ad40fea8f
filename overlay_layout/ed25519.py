"""ed25519 signatures through libsodium, called with ctypes: no hand-written crypto, and no PyNaCl/cffi to
import at boot (their import was most of the init's signature check). The frozen init carries
libsodium.so.23 in its bundle; on a build host it is Debian's libsodium23."""

from __future__ import annotations

import ctypes
import os
import sys

from overlay_layout.errors import BankbootError

PUBLIC_BYTES, SEED_BYTES, SIGNATURE_BYTES, SECRET_BYTES = 32, 32, 64, 64
_NAMES = ("libsodium.so.23", "libsodium.so")
_lib: ctypes.CDLL | None = None


class SodiumError(BankbootError):
    pass


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    bundle = getattr(sys, "_MEIPASS", None)
    candidates = [os.path.join(bundle, n) for n in _NAMES] if bundle else []
    candidates += list(_NAMES)
    errors = []
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as e:
            errors.append(str(e))
    else:
        raise SodiumError(f"libsodium cannot be loaded ({'; '.join(errors[-2:])}); on a build host install "
                          f"libsodium23 (make deps does)")
    if lib.sodium_init() < 0:
        raise SodiumError("sodium_init() failed")
    lib.crypto_sign_verify_detached.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong,
                                                ctypes.c_char_p]
    lib.crypto_sign_seed_keypair.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.crypto_sign_detached.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulonglong,
                                         ctypes.c_char_p]
    _lib = lib
    return lib


def library() -> ctypes.CDLL:
    """libsodium, loaded once (x25519.py binds its box and AEAD calls on the same library)."""
    return _load()


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `public`'s ed25519 signature of `message`."""
    if len(public) != PUBLIC_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    return bool(_load().crypto_sign_verify_detached(signature, message, len(message), public) == 0)


def keypair(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, secret key) from a 32-byte seed."""
    if len(seed) != SEED_BYTES:
        raise SodiumError(f"an ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
    pk, sk = ctypes.create_string_buffer(PUBLIC_BYTES), ctypes.create_string_buffer(SECRET_BYTES)
    if _load().crypto_sign_seed_keypair(pk, sk, seed) != 0:
        raise SodiumError("crypto_sign_seed_keypair failed")
    return pk.raw, sk.raw


def sign(seed: bytes, message: bytes) -> bytes:
    """The detached ed25519 signature of `message` by the key made from `seed`."""
    _, sk = keypair(seed)
    sig = ctypes.create_string_buffer(SIGNATURE_BYTES)
    if _load().crypto_sign_detached(sig, None, message, len(message), sk) != 0:
        raise SodiumError("crypto_sign_detached failed")
    return sig.raw
