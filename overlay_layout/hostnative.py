"""`_bankboot`'s API for a Python that lacks it (a build host's, or the tests'): the same functions as
builder/bankbootmodule.c, through ctypes on the process's libc and on libsodium. The init and bankctl never
use this: their libpython has `_bankboot` built in, and the freeze carries no ctypes (its import alone was
12 million instructions at every start). This module is also the typed reference of that API
(overlay_layout/native.py types `_bankboot` by it); tests/host/test_bankboot_module.py builds the C module
for the host and runs both through the same checks."""

from __future__ import annotations

import ctypes
import os

from overlay_layout.contract import UnknownArch, arch_of_machine

_libc = ctypes.CDLL(None, use_errno=True)
_sodium: ctypes.CDLL | None = None
_p, _n = ctypes.c_char_p, ctypes.c_ulonglong
_SIGNATURES = {
    "crypto_sign_verify_detached": [_p, _p, _n, _p],
    "crypto_sign_seed_keypair": [_p, _p, _p],
    "crypto_sign_detached": [_p, ctypes.c_void_p, _p, _n, _p],
    "crypto_box_seed_keypair": [_p, _p, _p],
    "crypto_box_seal": [_p, _p, _n, _p],
    "crypto_box_seal_open": [_p, _p, _n, _p, _p],
    "crypto_aead_xchacha20poly1305_ietf_encrypt": [_p, ctypes.POINTER(_n), _p, _n, _p, _n, _p, _p, _p],
    "crypto_aead_xchacha20poly1305_ietf_decrypt": [_p, ctypes.POINTER(_n), _p, _p, _n, _p, _n, _p, _p],
}


def _path(p: str | bytes | None) -> bytes | None:
    return None if p is None else os.fsencode(p)


def _errno(ret: int) -> int:
    return 0 if ret == 0 else ctypes.get_errno()


def mount(source: str | bytes, target: str | bytes, fstype: str | bytes | None, flags: int,
          data: str | bytes | None) -> int:
    return _errno(_libc.mount(_path(source), _path(target), _path(fstype), ctypes.c_ulong(flags), _path(data)))


def umount2(target: str | bytes, flags: int) -> int:
    return _errno(_libc.umount2(_path(target), ctypes.c_int(flags)))


def _number(name: str) -> int | None:
    try:
        nr: int | None = getattr(arch_of_machine(os.uname().machine), name)
    except UnknownArch:
        return None
    return nr


def finit_module(fd: int, params: str, flags: int) -> int:
    nr = _number("finit_module")
    if nr is None:
        return 38  # ENOSYS
    return _errno(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(fd), ctypes.c_char_p(params.encode()),
                                ctypes.c_int(flags)))


def kexec_file_load(kernel_fd: int, initrd_fd: int, cmdline: str, flags: int) -> int:
    nr = _number("kexec_file_load")
    if nr is None:
        return 38
    text = cmdline.encode() + b"\0"
    return _errno(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(kernel_fd), ctypes.c_int(initrd_fd),
                                ctypes.c_ulong(len(text)), ctypes.c_char_p(text), ctypes.c_ulong(flags)))


def reboot(cmd: int) -> int:
    return _errno(_libc.reboot(ctypes.c_int(cmd)))


def syncfs(fd: int) -> int:
    return _errno(_libc.syncfs(ctypes.c_int(fd)))


def load_global(path: str | bytes) -> None:
    ctypes.CDLL(os.fsdecode(path), mode=ctypes.RTLD_GLOBAL)


def open_sodium(path: str | bytes) -> None:
    global _sodium
    if _sodium is not None:
        return
    lib = ctypes.CDLL(os.fsdecode(path))
    for name, argtypes in _SIGNATURES.items():
        try:
            getattr(lib, name).argtypes = argtypes
        except AttributeError:
            raise OSError(f"{os.fsdecode(path)} has no {name} (not libsodium 1.0.12 or later)") from None
    if lib.sodium_init() < 0:
        raise OSError(f"{os.fsdecode(path)}: sodium_init() failed")
    _sodium = lib


def _lib() -> ctypes.CDLL:
    if _sodium is None:
        raise RuntimeError("libsodium is not open (call open_sodium first)")
    return _sodium


def _sized(b: bytes, size: int, what: str) -> bytes:
    if len(b) != size:
        raise ValueError(f"{what} is {len(b)} bytes, not {size}")
    return bytes(b)


def sign_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    lib = _lib()
    public, signature = _sized(public, 32, "the public key"), _sized(signature, 64, "the signature")
    message = bytes(message)
    return bool(lib.crypto_sign_verify_detached(signature, message, len(message), public) == 0)


def _keypair(call: str, seed: bytes, pk_size: int, sk_size: int) -> tuple[bytes, bytes]:
    lib = _lib()
    seed = _sized(seed, 32, "the seed")
    pk, sk = ctypes.create_string_buffer(pk_size), ctypes.create_string_buffer(sk_size)
    if getattr(lib, call)(pk, sk, seed) != 0:
        raise RuntimeError("libsodium refused to make a key pair")
    return pk.raw, sk.raw


def sign_keypair(seed: bytes) -> tuple[bytes, bytes]:
    return _keypair("crypto_sign_seed_keypair", seed, 32, 64)


def box_keypair(seed: bytes) -> tuple[bytes, bytes]:
    return _keypair("crypto_box_seed_keypair", seed, 32, 32)


def sign(message: bytes, secret: bytes) -> bytes:
    lib = _lib()
    secret, message = _sized(secret, 64, "the secret key"), bytes(message)
    sig = ctypes.create_string_buffer(64)
    if lib.crypto_sign_detached(sig, None, message, len(message), secret) != 0:
        raise RuntimeError("crypto_sign_detached failed")
    return sig.raw


def box_seal(message: bytes, public: bytes) -> bytes:
    lib = _lib()
    public, message = _sized(public, 32, "the public key"), bytes(message)
    out = ctypes.create_string_buffer(len(message) + 48)
    if lib.crypto_box_seal(out, message, len(message), public) != 0:
        raise RuntimeError("crypto_box_seal failed")
    return out.raw


def box_seal_open(box: bytes, public: bytes, secret: bytes) -> bytes | None:
    lib = _lib()
    public, secret, box = _sized(public, 32, "the public key"), _sized(secret, 32, "the secret key"), bytes(box)
    if len(box) < 48:
        return None
    out = ctypes.create_string_buffer(len(box) - 48)
    if lib.crypto_box_seal_open(out, box, len(box), public, secret) != 0:
        return None
    return out.raw


def aead_encrypt(message: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    lib = _lib()
    nonce, key, message, ad = _sized(nonce, 24, "the nonce"), _sized(key, 32, "the key"), bytes(message), bytes(ad)
    out = ctypes.create_string_buffer(len(message) + 16)
    size = ctypes.c_ulonglong()
    if lib.crypto_aead_xchacha20poly1305_ietf_encrypt(out, ctypes.byref(size), message, len(message), ad, len(ad),
                                                      None, nonce, key) != 0 or size.value != len(message) + 16:
        raise RuntimeError("crypto_aead_xchacha20poly1305_ietf_encrypt failed")
    return out.raw


_out: ctypes.Array[ctypes.c_char] | None = None  # decrypt's output buffer, reused: staging decrypts ~5000 chunks


def aead_decrypt(box: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes | None:
    global _out
    lib = _lib()
    nonce, key, box, ad = _sized(nonce, 24, "the nonce"), _sized(key, 32, "the key"), bytes(box), bytes(ad)
    if len(box) < 16:
        return None
    if _out is None or len(_out) < len(box):
        _out = ctypes.create_string_buffer(max(len(box), 1 << 16))
    size = ctypes.c_ulonglong()
    if lib.crypto_aead_xchacha20poly1305_ietf_decrypt(_out, ctypes.byref(size), None, box, len(box), ad, len(ad),
                                                      nonce, key) != 0 or size.value != len(box) - 16:
        return None
    return ctypes.string_at(_out, size.value)
