"""What encrypted banks need from libsodium, through ctypes like ed25519.py (the same library, no hand-written
crypto): X25519 key pairs, sealed boxes (an anonymous sender encrypts to a public key: crypto_box_seal) for
the content key, and XChaCha20-Poly1305 (crypto_aead_xchacha20poly1305_ietf) for the data. Used by bankctl
stage and bankboot image; the init never decrypts anything, so nothing here is imported at boot."""

from __future__ import annotations

import ctypes

from overlay_layout.ed25519 import SodiumError, library

PUBLIC_BYTES = SECRET_BYTES = SEED_BYTES = KEY_BYTES = 32
SEAL_BYTES = 48  # crypto_box_SEALBYTES: the ephemeral public key and the MAC
NONCE_BYTES = 24  # crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_BYTES = 16  # crypto_aead_xchacha20poly1305_ietf_ABYTES
_bound: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _bound
    if _bound is None:
        lib = library()
        p, n = ctypes.c_char_p, ctypes.c_ulonglong
        lib.crypto_box_seed_keypair.argtypes = [p, p, p]
        lib.crypto_box_seal.argtypes = [p, p, n, p]
        lib.crypto_box_seal_open.argtypes = [p, p, n, p, p]
        lib.crypto_aead_xchacha20poly1305_ietf_encrypt.argtypes = [p, ctypes.POINTER(n), p, n, p, n, p, p, p]
        lib.crypto_aead_xchacha20poly1305_ietf_decrypt.argtypes = [p, ctypes.POINTER(n), p, p, n, p, n, p, p]
        _bound = lib
    return _bound


def keypair(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, secret key) from a 32-byte seed."""
    if len(seed) != SEED_BYTES:
        raise SodiumError(f"an X25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
    pk, sk = ctypes.create_string_buffer(PUBLIC_BYTES), ctypes.create_string_buffer(SECRET_BYTES)
    if _lib().crypto_box_seed_keypair(pk, sk, seed) != 0:
        raise SodiumError("crypto_box_seed_keypair failed")
    return pk.raw, sk.raw


def seal(message: bytes, public: bytes) -> bytes:
    """`message` encrypted to `public` (a sealed box: only its secret key opens it)."""
    out = ctypes.create_string_buffer(len(message) + SEAL_BYTES)
    if len(public) != PUBLIC_BYTES or _lib().crypto_box_seal(out, message, len(message), public) != 0:
        raise SodiumError("crypto_box_seal failed")
    return out.raw


def unseal(box: bytes, public: bytes, secret: bytes) -> bytes | None:
    """The message in a sealed box, or None when this key pair cannot open it (not for it, or changed)."""
    if len(box) < SEAL_BYTES or len(public) != PUBLIC_BYTES or len(secret) != SECRET_BYTES:
        return None
    out = ctypes.create_string_buffer(len(box) - SEAL_BYTES)
    if _lib().crypto_box_seal_open(out, box, len(box), public, secret) != 0:
        return None
    return out.raw


def encrypt(message: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    """XChaCha20-Poly1305: the ciphertext with its 16-byte tag appended."""
    if len(nonce) != NONCE_BYTES or len(key) != KEY_BYTES:
        raise SodiumError("XChaCha20-Poly1305 takes a 24-byte nonce and a 32-byte key")
    out = ctypes.create_string_buffer(len(message) + TAG_BYTES)
    size = ctypes.c_ulonglong()
    if _lib().crypto_aead_xchacha20poly1305_ietf_encrypt(out, ctypes.byref(size), message, len(message), ad, len(ad),
                                                         None, nonce, key) != 0:
        raise SodiumError("crypto_aead_xchacha20poly1305_ietf_encrypt failed")
    return out.raw[:size.value]


_out: ctypes.Array[ctypes.c_char] | None = None  # decrypt's output buffer, reused: staging decrypts ~5000 chunks


def decrypt(box: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """The plaintext, or None when the tag does not match (a changed, truncated or foreign ciphertext)."""
    global _out
    if len(box) < TAG_BYTES or len(nonce) != NONCE_BYTES or len(key) != KEY_BYTES:
        return None
    if _out is None or len(_out) < len(box):
        _out = ctypes.create_string_buffer(max(len(box), 1 << 16))
    size = ctypes.c_ulonglong()
    if _lib().crypto_aead_xchacha20poly1305_ietf_decrypt(_out, ctypes.byref(size), None, box, len(box), ad, len(ad),
                                                         nonce, key) != 0:
        return None
    return ctypes.string_at(_out, size.value)
