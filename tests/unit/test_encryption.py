"""Encrypted banks on the device's side: libsodium through ctypes against PyNaCl, staging decrypts into a
plain image, and the bad inputs the issue names (a bank for another device, a truncated ciphertext, a wrong
tag), each a clear message with nothing left on the banks partition."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from nacl import bindings
from nacl.public import PrivateKey, PublicKey, SealedBox

from overlay_layout import chunks, encryption, x25519
from overlay_layout.bankfile import BankFile
from overlay_layout.stage import StageError, stage
from overlay_layout.state import Banks
from overlay_layout.trust import Policy
from tests.banks import install_first_image, make_bank

SEED = hashlib.sha256(b"device key").digest()
OTHER = hashlib.sha256(b"another device").digest()


def test_sealed_boxes_and_xchacha20poly1305_agree_with_pynacl() -> None:
    for i in range(10):
        seed = hashlib.sha256(b"seed %d" % i).digest()
        public, secret = x25519.keypair(seed)
        nacl_key = PrivateKey(secret)
        assert bytes(nacl_key.public_key) == public
        message = os.urandom(32 + i)
        assert SealedBox(nacl_key).decrypt(x25519.seal(message, public)) == message
        assert x25519.unseal(SealedBox(PublicKey(public)).encrypt(message), public, secret) == message
        key, nonce, ad = os.urandom(32), os.urandom(24), b"ad %d" % i
        ours = x25519.encrypt(message, ad, nonce, key)
        assert ours == bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(message, ad, nonce, key)
        assert x25519.decrypt(ours, ad, nonce, key) == message
        bad = bytearray(ours)
        bad[i] ^= 1
        assert x25519.decrypt(bytes(bad), ad, nonce, key) is None
        assert x25519.decrypt(ours, ad + b"!", nonce, key) is None and x25519.decrypt(ours[:-1], ad, nonce, key) is None


def device_key(tmp_path: Path, seed: bytes = SEED) -> tuple[Path, bytes]:
    import base64

    path = tmp_path / f"device-{seed[:2].hex()}.key"
    path.write_text(f"{encryption.PRIVATE_TAG} {base64.b64encode(seed).decode()}\n")
    return path, x25519.keypair(seed)[0]


def setup(tmp_path: Path, payload: bytes = b"") -> tuple[Banks, Policy, Path, str, bytes]:
    install_first_image(tmp_path / "banks")
    key, public = device_key(tmp_path)
    payload = payload or os.urandom(300 << 10)
    image = make_bank(tmp_path / "e.bank", "2.0.0", payload, encrypt_to=(public,))
    policy = Policy({}, allow_unsigned=True, allow_downgrade=True, device_key=str(key))
    return Banks(str(tmp_path / "banks")), policy, tmp_path / "e.bank", image, payload


def test_an_encrypted_bank_stages_as_a_plain_image(tmp_path: Path) -> None:
    banks, policy, bank, image, payload = setup(tmp_path)
    with BankFile(str(bank)) as b:
        tags = 16 * b.manifest["chunks"]["count"]
        assert b.encrypted and b.members["rootfs.squashfs"].size == b.manifest["size"] + tags
        with open(bank, "rb") as f:
            assert b"hsqs" + payload[:64] not in f.read()  # nothing of the squashfs in clear
    m = stage(banks, str(bank), policy, "9.9.9", machine="x86_64")
    assert m["id"] == image and banks.layout.pointer("next") == image
    lay = banks.layout
    plain = Path(lay.squashfs(image)).read_bytes()
    assert hashlib.sha256(plain).hexdigest() == m["sha256"] and plain.startswith(b"hsqs" + payload[:100])
    assert hashlib.sha256(Path(lay.verity(image)).read_bytes()).hexdigest() == m["verity"]["sha256"]
    assert chunks.read(os.path.join(lay.image_dir(image), chunks.MEMBER)) is not None
    assert "encryption" in (Path(lay.manifest_path(image)).read_text())  # the signed manifest, as it was


def nothing_staged(banks: Banks) -> None:
    assert banks.layout.pointer("next") is None
    assert sorted(os.listdir(banks.layout.overlay)) == ["1.0.0-base", "current"]


def test_a_bank_for_another_device_or_without_a_device_key_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    banks, _, bank, _, _ = setup(tmp_path)
    other, _ = device_key(tmp_path, OTHER)
    with pytest.raises(StageError, match=r"is encrypted for key [0-9a-f]{16}, not for this device's key "
                                         r"[0-9a-f]{16} \(.*\): a bank for another device"):
        stage(banks, str(bank), Policy({}, True, True, device_key=str(other)), "9.9.9", machine="x86_64")
    nothing_staged(banks)
    with pytest.raises(StageError, match="this device has no decryption key at /nonexistent/device.key"):
        stage(banks, str(bank), Policy({}, True, True, device_key="/nonexistent/device.key"), "9.9.9",
              machine="x86_64")
    nothing_staged(banks)


def test_a_truncated_ciphertext_is_refused(tmp_path: Path) -> None:
    banks, policy, bank, _, _ = setup(tmp_path)
    data = bank.read_bytes()
    with BankFile(str(bank)) as b:
        sq = b.members["rootfs.squashfs"]
    (tmp_path / "cut.bank").write_bytes(data[:sq.offset + sq.size // 2])
    with pytest.raises(StageError, match="truncated"):
        stage(banks, str(tmp_path / "cut.bank"), policy, "9.9.9", machine="x86_64")
    nothing_staged(banks)
    # a whole archive whose encrypted squashfs lost its last tag's worth of bytes
    short = tmp_path / "short.bank"
    with tarfile.open(bank) as src, tarfile.open(short, "w", format=tarfile.USTAR_FORMAT) as dst:
        for info in src.getmembers():
            body = src.extractfile(info).read()
            if info.name == "rootfs.squashfs":
                body, info.size = body[:-16], info.size - 16
            dst.addfile(info, io.BytesIO(body))
    with pytest.raises(StageError, match=r"encrypted squashfs is \d+ bytes, the manifest says \d+"):
        stage(banks, str(short), policy, "9.9.9", machine="x86_64")
    nothing_staged(banks)


@pytest.mark.parametrize("where", ["rootfs.squashfs", "rootfs.verity", "rootfs.chunks", "swap"])
def test_a_wrong_tag_is_refused_and_nothing_is_left(tmp_path: Path, where: str) -> None:
    # zeros have no chunk anchors: the squashfs is cut into whole 64 KiB chunks of the same plaintext, so two of
    # them can trade places, each whole: only the nonce (the chunk's number) tells them apart
    banks, policy, bank, _, payload = setup(tmp_path, bytes(300 << 10) if where == "swap" else b"")
    data = bytearray(bank.read_bytes())
    with BankFile(str(bank)) as b:
        members = b.members
    if where == "swap":
        plain = b"hsqs" + payload
        offsets = encryption.chunk_offsets(chunks.index_of(plain + bytes(-len(plain) % 4096)))
        at = members["rootfs.squashfs"].offset
        one, two = slice(at + offsets[1], at + offsets[2]), slice(at + offsets[2], at + offsets[3])
        assert offsets[2] - offsets[1] == offsets[3] - offsets[2] == chunks.MAX_CHUNK + encryption.TAG
        data[one], data[two] = data[two], data[one]
    else:
        m = members[where]
        data[m.offset + m.size // 2] ^= 0x40
    bank.write_bytes(bytes(data))
    with pytest.raises(StageError, match=r"(chunk \d+ of rootfs.squashfs|rootfs.verity|rootfs.chunks) fails its "
                                         r"authentication tag: the bank is damaged, truncated or was changed"):
        stage(banks, str(bank), policy, "9.9.9", machine="x86_64")
    nothing_staged(banks)
