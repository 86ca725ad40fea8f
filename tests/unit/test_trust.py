"""Signatures, trusted keys, versions and the anti-rollback floor."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from builder.keys import keygen
from overlay_layout.layout import LayoutError
from overlay_layout.manifest import dump_manifest, parse_manifest
from overlay_layout.stage import StageError, stage
from overlay_layout.state import Banks
from overlay_layout.trust import (
    Policy,
    TrustError,
    key_id,
    parse_version,
    read_private_key,
    read_public_key,
    sign_manifest,
    verify_manifest,
    version_lt,
)
from tests.banks import boot, install_first_image

BASE = {"format": 1, "id": "1.1.0-abc", "version": "1.1.0", "arch": "amd64", "size": 8, "sha256": "b" * 64,
        "created": "1970-01-01T00:00:00Z", "min_bankboot": "0.1.0"}


@pytest.fixture
def keys(tmp_path: Path):
    a = keygen(tmp_path / "a")
    b = keygen(tmp_path / "b")
    return a, b


def trusted(*pubs: Path) -> dict[str, bytes]:
    return {key_id(read_public_key(str(p))): read_public_key(str(p)) for p in pubs}


def test_sign_verify_round_trip_names_the_key(keys) -> None:
    (apriv, apub, aid), _ = keys
    m = sign_manifest(BASE, read_private_key(str(apriv)))
    assert [s["key"] for s in m["signatures"]] == [aid] and "key" not in m
    again = parse_manifest(dump_manifest(m), "m")
    assert verify_manifest(again, trusted(apub)) == f"key {aid}"


def test_every_single_byte_change_to_the_manifest_is_refused(keys) -> None:
    (apriv, apub, _), _ = keys
    data = dump_manifest(sign_manifest(BASE, read_private_key(str(apriv))))
    accepted = []
    for i in range(len(data)):
        for delta in (1, 0x20):
            changed = bytearray(data)
            changed[i] = (changed[i] + delta) % 256
            try:
                m = parse_manifest(bytes(changed), "m")
                verify_manifest(m, trusted(apub))
            except (LayoutError, TrustError):
                continue
            if m != parse_manifest(data, "m"):  # same meaning (e.g. whitespace) is not a change
                accepted.append((i, delta))
    assert accepted == []


def test_wrong_key_and_unknown_key_and_unsigned(keys) -> None:
    (_apriv, apub, _), (bpriv, _bpub, bid) = keys
    m = sign_manifest(BASE, read_private_key(str(bpriv)))
    with pytest.raises(TrustError, match=f"signed by key {bid}, which this device does not trust"):
        verify_manifest(m, trusted(apub))
    # claims key a, signed by b
    forged = {**m, "signatures": [{**m["signatures"][0], "key": key_id(read_public_key(str(apub)))}]}
    with pytest.raises(TrustError, match="does not match"):
        verify_manifest(forged, trusted(apub))
    with pytest.raises(TrustError, match="not signed"):
        verify_manifest(BASE, trusted(apub))
    assert "unsigned" in verify_manifest(BASE, trusted(apub), allow_unsigned=True)


def test_key_rotation_accepts_either_trusted_key(keys) -> None:
    (apriv, apub, aid), (bpriv, bpub, bid) = keys
    both = trusted(apub, bpub)
    assert verify_manifest(sign_manifest(BASE, read_private_key(str(apriv))), both) == f"key {aid}"
    assert verify_manifest(sign_manifest(BASE, read_private_key(str(bpriv))), both) == f"key {bid}"


def test_key_files_are_checked(tmp_path: Path) -> None:
    (tmp_path / "bad.pub").write_text("ssh-ed25519 AAAA\n")
    with pytest.raises(TrustError, match="not a bankboot public key"):
        read_public_key(str(tmp_path / "bad.pub"))
    (tmp_path / "short.pub").write_text(f"bankboot-ed25519 {base64.b64encode(b'x' * 31).decode()}\n")
    with pytest.raises(TrustError, match="32 bytes"):
        read_public_key(str(tmp_path / "short.pub"))
    with pytest.raises(FileExistsError):
        keygen(tmp_path / "k")
        keygen(tmp_path / "k")


@pytest.mark.parametrize("a, b", [("1.0.0", "1.0.1"), ("1.9.0", "1.10.0"), ("1.0.0-rc.1", "1.0.0"),
                                  ("1.0.0-alpha", "1.0.0-alpha.1"), ("1.0.0-alpha.2", "1.0.0-alpha.10"),
                                  ("1.0.0-2", "1.0.0-alpha"), ("0.9.9", "1.0.0")])
def test_semantic_version_order(a: str, b: str) -> None:
    assert version_lt(a, b) and not version_lt(b, a)


def test_build_metadata_does_not_order_and_garbage_is_an_error() -> None:
    assert parse_version("1.0.0+a") == parse_version("1.0.0+b")
    for bad in ("1.0", "v1.0.0", "1.0.0.0", "01.0.0", "", "latest"):
        with pytest.raises(TrustError, match="not a semantic version"):
            parse_version(bad)


def make_signed_bank(path: Path, version: str, seed: bytes | None, payload: bytes = b"hsqs" + b"q" * 9000,
                     arch: str = "amd64", tamper: bool = False) -> dict:
    digest = hashlib.sha256(payload).hexdigest()
    m = {**BASE, "id": f"{version}-{digest[:8]}", "version": version, "arch": arch, "size": len(payload),
         "sha256": digest}
    if seed is not None:
        m = sign_manifest(m, seed)
    if tamper:
        payload = payload[:-1] + b"!"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("manifest.json", dump_manifest(m)), ("rootfs.squashfs", payload)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return m


def test_stage_enforces_signatures_and_the_floor(keys, tmp_path: Path) -> None:
    (apriv, apub, _), (bpriv, _, _) = keys
    root = tmp_path / "banks"
    root.mkdir()
    install_first_image(root)
    banks = Banks(str(root))
    policy = Policy(trusted(apub), allow_unsigned=False, allow_downgrade=False)
    a = read_private_key(str(apriv))
    cases = [("unsigned", None, False, "not signed"), ("unknown-key", read_private_key(str(bpriv)), False,
             "does not trust"), ("tampered", a, True, "does not match the signed manifest")]
    for name, seed, tamper, message in cases:
        make_signed_bank(tmp_path / f"{name}.bank", "2.0.0", seed, tamper=tamper)
        with pytest.raises(StageError, match=message):
            stage(banks, str(tmp_path / f"{name}.bank"), policy, "0.1.0", machine="x86_64")
        assert banks.layout.pointer("next") is None
    # A signed one goes in; committed, it raises the floor; an older one is then refused.
    m = make_signed_bank(tmp_path / "good.bank", "2.0.0", a)
    stage(banks, str(tmp_path / "good.bank"), policy, "0.1.0", machine="x86_64")
    boot(banks)
    banks.mark_good(m["id"])
    assert banks.load()["floor"] == "2.0.0"
    make_signed_bank(tmp_path / "old.bank", "1.5.0", a, payload=b"hsqs" + b"o" * 9000)
    with pytest.raises(StageError, match="below this device's floor 2.0.0"):
        stage(banks, str(tmp_path / "old.bank"), policy, "0.1.0", machine="x86_64")
    with pytest.raises(StageError, match="does not allow downgrades"):
        stage(banks, str(tmp_path / "old.bank"), policy, "0.1.0", machine="x86_64", allow_downgrade=True)
    lenient = Policy(trusted(apub), allow_unsigned=False, allow_downgrade=True)
    stage(banks, str(tmp_path / "old.bank"), lenient, "0.1.0", machine="x86_64", allow_downgrade=True)
    # An image that needs a newer bankboot than the device runs.
    make_signed_bank(tmp_path / "new.bank", "3.0.0", a, payload=b"hsqs" + b"n" * 9000)
    with pytest.raises(StageError, match="needs bankboot 0.1.0 or newer; this device runs 0.0.1"):
        stage(banks, str(tmp_path / "new.bank"), policy, "0.0.1", machine="x86_64")


def test_signing_key_seed_round_trip(tmp_path: Path) -> None:
    priv, pub, kid = keygen(tmp_path / "x")
    seed = read_private_key(str(priv))
    assert key_id(bytes(SigningKey(seed).verify_key)) == kid == key_id(read_public_key(str(pub)))
    assert oct(priv.stat().st_mode & 0o777) == "0o600"


def test_libsodium_through_ctypes_agrees_with_pynacl() -> None:
    """The device checks signatures with libsodium through ctypes; PyNaCl (tests only) is the oracle."""
    from nacl.signing import SigningKey, VerifyKey

    from overlay_layout import ed25519

    for i in range(20):
        seed = hashlib.sha256(b"seed %d" % i).digest()
        message = b"manifest %d " % i * (i + 1)
        public, _ = ed25519.keypair(seed)
        assert public == bytes(SigningKey(seed).verify_key)
        ours = ed25519.sign(seed, message)
        assert ours == SigningKey(seed).sign(message).signature
        VerifyKey(public).verify(message, ours)
        assert ed25519.verify(public, message, ours)
        bad = bytearray(ours)
        bad[i % 64] ^= 1 << (i % 8)
        assert not ed25519.verify(public, message, bytes(bad))
        assert not ed25519.verify(public, message + b"!", ours)
        assert not ed25519.verify(public[:31], message, ours) and not ed25519.verify(public, message, ours[:63])
