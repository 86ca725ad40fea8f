"""The `_bankboot` module (builder/bankbootmodule.c), built here for the host's Python as an extension from the
same source the lean libpython compiles in, against overlay_layout/hostnative.py (the ctypes stand-in a
build host runs): both give the same answers, PyNaCl is the oracle for the crypto, and bad arguments are
refused (never read past). The lean libpython itself is checked to carry the module and the frozen
program to carry no ctypes."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest
from nacl import bindings
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from builder.launcher import COMPILERS
from builder.leanpython import MODULE_FLAGS, MODULE_SOURCE
from builder.run import find_tool
from overlay_layout import hostnative

API = ("mount", "umount2", "finit_module", "kexec_file_load", "reboot", "syncfs", "load_global", "open_sodium",
       "sign_verify", "sign_keypair", "sign", "box_keypair", "box_seal", "box_seal_open", "aead_encrypt",
       "aead_decrypt")
SODIUM = "libsodium.so.23"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding `_bankboot` compiled for this Python (the amd64 compiler, the lean libpython's
    flags)."""
    out = tmp_path_factory.mktemp("bankboot-module")
    so = out / f"_bankboot{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run([COMPILERS["amd64"][0], *MODULE_FLAGS, "-shared", "-I", sysconfig.get_paths()["include"], "-o",
                    str(so), str(MODULE_SOURCE)], check=True)
    return out


@pytest.fixture(scope="module")
def real(built: Path) -> ModuleType:
    so = next(built.glob("_bankboot*"))
    spec = importlib.util.spec_from_file_location("_bankboot", so)
    assert spec is not None and spec.loader is not None
    before = sys.modules.get("_bankboot")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # A single-phase extension (PyModule_Create) enters sys.modules as it is created, not when it is
    # imported: left there, every later `import _bankboot` of the session (overlay_layout.native, reloaded
    # by tests/unit/test_native.py) would find this build for the host instead of no module at all.
    if before is None:
        sys.modules.pop("_bankboot", None)
    else:
        sys.modules["_bankboot"] = before
    module.open_sodium(SODIUM)
    return module


@pytest.fixture(params=["_bankboot", "hostnative"])
def api(request: pytest.FixtureRequest, real: ModuleType) -> ModuleType:
    if request.param == "hostnative":
        hostnative.open_sodium(SODIUM)
        return hostnative
    return real


def test_both_have_the_same_functions(real: ModuleType) -> None:
    assert sorted(n for n in dir(real) if not n.startswith("_")) == sorted(API)
    assert all(callable(getattr(hostnative, n)) for n in API)


def test_signatures_agree_with_pynacl(api: ModuleType) -> None:
    for i in range(8):
        seed = hashlib.sha256(b"seed %d" % i).digest()
        message = b"manifest %d " % i * (i + 1)
        public, secret = api.sign_keypair(seed)
        assert public == bytes(SigningKey(seed).verify_key) and len(secret) == 64
        ours = api.sign(message, secret)
        assert ours == SigningKey(seed).sign(message).signature
        VerifyKey(public).verify(message, ours)
        assert api.sign_verify(public, message, ours) is True
        bad = bytearray(ours)
        bad[i % 64] ^= 1 << (i % 8)
        assert api.sign_verify(public, message, bytes(bad)) is False
        assert api.sign_verify(public, memoryview(message + b"!"), ours) is False


def test_sealed_boxes_and_aead_agree_with_pynacl(api: ModuleType) -> None:
    for i in range(6):
        public, secret = api.box_keypair(hashlib.sha256(b"box %d" % i).digest())
        assert bytes(PrivateKey(secret).public_key) == public
        message = os.urandom(17 * i)
        assert SealedBox(PrivateKey(secret)).decrypt(api.box_seal(message, public)) == message
        sealed = SealedBox(PublicKey(public)).encrypt(message)
        assert api.box_seal_open(sealed, public, secret) == message
        assert api.box_seal_open(sealed[:-1], public, secret) is None
        assert api.box_seal_open(sealed[:47], public, secret) is None
        key, nonce, ad = os.urandom(32), os.urandom(24), b"ad %d" % i
        box = api.aead_encrypt(message, ad, nonce, key)
        assert box == bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(message, ad, nonce, key)
        assert api.aead_decrypt(box, ad, nonce, key) == message
        assert api.aead_decrypt(box, ad + b"!", nonce, key) is None
        assert api.aead_decrypt(box[:15], ad, nonce, key) is None
        assert api.aead_decrypt(bytes(16), b"", nonce, key) is None


@pytest.mark.parametrize(("call", "args", "what"), [
    ("sign_verify", (b"k" * 31, b"m", b"s" * 64), "the public key is 31 bytes"),
    ("sign_verify", (b"k" * 32, b"m", b"s" * 65), "the signature is 65 bytes"),
    ("sign_keypair", (b"s" * 33,), "the seed is 33 bytes"),
    ("sign", (b"m", b"k" * 32), "the secret key is 32 bytes"),
    ("box_keypair", (b"",), "the seed is 0 bytes"),
    ("box_seal", (b"m", b"k" * 64), "the public key is 64 bytes"),
    ("box_seal_open", (b"b" * 64, b"k" * 32, b"k" * 31), "the secret key is 31 bytes"),
    ("aead_encrypt", (b"m", b"", b"n" * 12, b"k" * 32), "the nonce is 12 bytes"),
    ("aead_decrypt", (b"b" * 32, b"", b"n" * 24, b"k" * 16), "the key is 16 bytes"),
])
def test_wrong_sizes_are_refused(api: ModuleType, call: str, args: tuple[bytes, ...], what: str) -> None:
    with pytest.raises(ValueError, match=what):
        getattr(api, call)(*args)


def test_system_calls_report_the_same_errno(real: ModuleType, tmp_path: Path) -> None:
    """Calls that fail harmlessly on the host (nothing mounted, loaded or rebooted), the same errno both ways."""
    missing = str(tmp_path / "missing")
    cases = [("mount", ("none", missing, "tmpfs", 0, None)), ("mount", (b"none", missing.encode(), "tmpfs", 0, "x")),
             ("umount2", (missing, 0)), ("umount2", (str(tmp_path), 0)), ("finit_module", (-1, "", 0)),
             ("kexec_file_load", (-1, -1, "console=ttyS0", 0)),
             ("syncfs", (-1,)),
             ("reboot", (0x1234,))]  # not a command: refused before anything happens (EINVAL, or EPERM)
    for call, args in cases:
        ours, stand_in = getattr(real, call)(*args), getattr(hostnative, call)(*args)
        assert ours == stand_in != 0, (call, args, ours, stand_in)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert real.syncfs(fd) == hostnative.syncfs(fd) == 0
    finally:
        os.close(fd)
    assert real.umount2(missing, 0) == errno.ENOENT  # (finit_module: EBADF, or ENOSYS under a seccomp filter)
    with pytest.raises(TypeError):
        real.mount(None, missing, "tmpfs", 0, None)


def test_load_global_names_what_failed(api: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="missing.so"):
        api.load_global(str(tmp_path / "missing.so"))
    (tmp_path / "junk.so").write_bytes(b"not an ELF")
    with pytest.raises(OSError, match="junk.so"):
        api.load_global(str(tmp_path / "junk.so"))
    api.load_global(SODIUM)


def test_libsodium_must_be_opened_first_and_be_libsodium(built: Path) -> None:
    """In a fresh process: a crypto call before open_sodium is a clear error, as is a library that is not
    libsodium; the libc is refused by the first symbol it lacks."""
    script = ("import _bankboot\n"
              "try:\n    _bankboot.sign_verify(b'k' * 32, b'm', b's' * 64)\n"
              "except RuntimeError as e:\n    print(e)\n"
              "try:\n    _bankboot.open_sodium('libc.so.6')\n"
              "except OSError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(built)},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["libsodium is not open (call open_sodium first)",
                   "libc.so.6 has no crypto_sign_verify_detached (not libsodium 1.0.12 or later)"]


def test_the_lean_libpython_and_the_frozen_program(aarch64_frozen: Path, tmp_path: Path) -> None:
    """The lean libpython carries `_bankboot` among its builtin modules; the frozen program no ctypes,
    _ctypes or libffi (PyInstaller's bootstrap would import ctypes at every start)."""
    from builder.leanpython import SONAME

    contents = aarch64_frozen / "bankboot"
    nm = find_tool("aarch64-linux-gnu-nm", "binutils-aarch64-linux-gnu", RuntimeError)
    symbols = subprocess.run([nm, "-D", "--defined-only", str(contents / SONAME)],
                             capture_output=True, text=True, check=True).stdout
    assert " PyInit__bankboot" in symbols
    assert b"_bankboot\0" in (contents / SONAME).read_bytes()  # its name in _PyImport_Inittab
    files = [p.name for p in contents.rglob("*")]
    assert not [n for n in files if "ctypes" in n or n.startswith("libffi")], files
    from PyInstaller.archive.readers import CArchiveReader, ZlibArchiveReader

    archive = CArchiveReader(str(aarch64_frozen / "init"))
    pyz = tmp_path / "PYZ.pyz"
    pyz.write_bytes(archive.extract("PYZ.pyz"))
    modules = set(ZlibArchiveReader(str(pyz)).toc)
    assert "overlay_layout.native" in modules and "initfs.syscalls" in modules
    assert not {m for m in modules if m.split(".")[0] == "ctypes" or m == "overlay_layout.hostnative"}


@pytest.fixture(scope="module")
def aarch64_frozen() -> Path:
    from builder.board import load_board
    from builder.freeze import freeze_init
    from builder.pysysroot import locate_sysroot

    return freeze_init(locate_sysroot(load_board("qemu-aarch64").arch))
