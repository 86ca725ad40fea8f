"""What encrypted banks need from libsodium, through `_bankboot` like ed25519.py (the same library, no hand-written
crypto): X25519 key pairs, sealed boxes (an anonymous sender encrypts to a public key: crypto_box_seal) for
the content key, and XChaCha20-Poly1305 (crypto_aead_xchacha20poly1305_ietf) for the data. Used by bankctl
stage and bankboot image; the init never decrypts anything, so nothing here is imported at boot."""

from __future__ import annotations

from overlay_layout.ed25519 import SodiumError, library
from overlay_layout.native import api

PUBLIC_BYTES = SECRET_BYTES = SEED_BYTES = KEY_BYTES = 32
SEAL_BYTES = 48  # crypto_box_SEALBYTES: the ephemeral public key and the MAC
NONCE_BYTES = 24  # crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_BYTES = 16  # crypto_aead_xchacha20poly1305_ietf_ABYTES


def keypair(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, secret key) from a 32-byte seed."""
    if len(seed) != SEED_BYTES:
        raise SodiumError(f"an X25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
    library()
    try:
        return api.box_keypair(seed)
    except RuntimeError as e:
        raise SodiumError(str(e)) from None


def seal(message: bytes, public: bytes) -> bytes:
    """`message` encrypted to `public` (a sealed box: only its secret key opens it)."""
    if len(public) != PUBLIC_BYTES:
        raise SodiumError("crypto_box_seal failed")
    library()
    try:
        return api.box_seal(message, public)
    except RuntimeError as e:
        raise SodiumError(str(e)) from None


def unseal(box: bytes, public: bytes, secret: bytes) -> bytes | None:
    """The message in a sealed box, or None when this key pair cannot open it (not for it, or changed)."""
    if len(box) < SEAL_BYTES or len(public) != PUBLIC_BYTES or len(secret) != SECRET_BYTES:
        return None
    library()
    return api.box_seal_open(box, public, secret)


def encrypt(message: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    """XChaCha20-Poly1305: the ciphertext with its 16-byte tag appended."""
    if len(nonce) != NONCE_BYTES or len(key) != KEY_BYTES:
        raise SodiumError("XChaCha20-Poly1305 takes a 24-byte nonce and a 32-byte key")
    library()
    try:
        return api.aead_encrypt(message, ad, nonce, key)
    except RuntimeError as e:
        raise SodiumError(str(e)) from None


def decrypt(box: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """The plaintext, or None when the tag does not match (a changed, truncated or foreign ciphertext)."""
    if len(box) < TAG_BYTES or len(nonce) != NONCE_BYTES or len(key) != KEY_BYTES:
        return None
    library()
    return api.aead_decrypt(box, ad, nonce, key)
