"""Signatures, key updates and encryption on the build host: what `bankboot image` adds to a manifest
(--sign, --key-updates, --encrypt-to), `bankboot sign` (one more signature on a bank file or a pending key
update) and `bankboot key-update` (a chain file's next update).

A chain file is the publisher's record of the key updates its fleet follows, from the root keys its
initramfs trusts (`root`, for the builder's checks only: a device checks against its own initramfs):
    {"format": 1, "root": {"threshold": 1, "keys": {id: base64}}, "updates": [update 1, update 2, ...]}
Every bank built with `--key-updates CHAIN` carries all of `updates`, so a device that skipped releases
catches up."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

from builder.errors import BuildError
from overlay_layout import durable, ed25519
from overlay_layout.keychain import extend, new_update, parse_chain, set_of, sign_update, verify_update
from overlay_layout.layout import MANIFEST, SQUASHFS, LayoutError
from overlay_layout.manifest import dump_manifest, parse_manifest
from overlay_layout.trust import KeySet, TrustError, key_id, read_private_key, read_public_key, sign_manifest


class SigningError(BuildError):
    pass


def read_seeds(paths: tuple[Path, ...]) -> list[bytes]:
    try:
        return [read_private_key(str(p)) for p in paths]
    except TrustError as e:
        raise SigningError(str(e)) from None


def public_keys(paths: tuple[Path, ...]) -> dict[str, bytes]:
    try:
        keys = {key_id(k): k for k in (read_public_key(str(p)) for p in paths)}
    except TrustError as e:
        raise SigningError(str(e)) from None
    return keys


# -- chain files ---------------------------------------------------------------------------------------------
def read_chain(path: Path) -> tuple[KeySet, list[dict[str, Any]]]:
    """(the root keys, the updates) of a chain file; each update is checked for shape, not signatures."""
    try:
        doc = json.loads(path.read_text())
        root = doc["root"]
        keys = {kid: read_b64(text, f"{path}: root key {kid}") for kid, text in root["keys"].items()}
        if not keys or any(key_id(v) != k for k, v in keys.items()) or not 0 < root["threshold"] <= len(keys):
            raise SigningError(f"{path}: its root keys are not a set of keys with a threshold they can meet")
        return KeySet(keys, root["threshold"]), parse_chain(doc["updates"], str(path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SigningError(f"{path} is not a bankboot chain file ({type(e).__name__}: {e})") from None
    except TrustError as e:
        raise SigningError(str(e)) from None


def read_b64(text: str, what: str) -> bytes:
    from overlay_layout.trust import decode_key

    return decode_key(text, what)


def write_chain(path: Path, root: KeySet, updates: list[dict[str, Any]]) -> None:
    import binascii

    doc = {"format": 1, "root": {"threshold": root.threshold,
                                 "keys": {k: binascii.b2a_base64(v, newline=False).decode()
                                          for k, v in sorted(root.keys.items())}}, "updates": updates}
    durable.write_file(str(path), (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def verified_chain(path: Path) -> list[dict[str, Any]]:
    """A chain file's updates, each signed by enough keys of the set before it and of its own."""
    root, updates = read_chain(path)
    try:
        extend(root, updates, str(path))
    except TrustError as e:
        raise SigningError(f"{e} (add signatures: bankboot sign {path} --key KEY.key)") from None
    return updates


def add_key_update(path: Path, keys: tuple[Path, ...], threshold: int, sign: tuple[Path, ...],
                   root_keys: tuple[Path, ...] = (), root_threshold: int = 1) -> tuple[dict[str, Any], str]:
    """Append the next key update to the chain file at `path` (made, with `root_keys`, when it does not
    exist): the whole new set `keys` with its threshold, signed by `sign`. Returns (the update, how far its
    signatures go)."""
    if path.exists():
        if root_keys:
            raise SigningError(f"{path} exists: its root keys are already set (--root only starts a chain)")
        root, updates = read_chain(path)
    elif not root_keys:
        raise SigningError(f"{path} does not exist: start the chain with --root (the keys your devices' initramfs "
                           f"trusts, as given to `bankboot initramfs --trust`)")
    else:
        root, updates = KeySet(public_keys(root_keys), root_threshold), []
        if not 0 < root_threshold <= len(root.keys):
            raise SigningError(f"--root-threshold {root_threshold} must be from 1 to the {len(root.keys)} root key(s)")
    try:
        prev = extend(root, updates, str(path))
    except TrustError as e:
        raise SigningError(f"{e}: sign it fully before the next one (bankboot sign {path} --key KEY.key)") from None
    try:
        update = new_update(prev.serial + 1, public_keys(keys), threshold)
    except TrustError as e:
        raise SigningError(str(e)) from None
    for seed in read_seeds(sign):
        update = _signed(update, seed)
    write_chain(path, root, [*updates, update])
    return update, signed_enough(update, prev)


def _signed(update: dict[str, Any], seed: bytes) -> dict[str, Any]:
    try:
        return sign_update(update, seed)
    except TrustError as e:
        raise SigningError(str(e)) from None


def signed_enough(update: dict[str, Any], prev: KeySet) -> str:
    """A line on how far an update's signatures go towards both thresholds."""
    try:
        verify_update(update, prev, "")
        return f"key update {update['serial']} is signed by enough keys of the set before it and of its own"
    except TrustError as e:
        return f"{str(e).lstrip(': ')}: add signatures with `bankboot sign CHAIN --key KEY.key`"


# -- bankboot sign ------------------------------------------------------------------------------------------
def sign_file(path: Path, keys: tuple[Path, ...], check_key: Path | None = None) -> str:
    """Add each key's signature to a bank file (nothing else in it changes) or to a chain file's last key
    update. Returns what was signed, for the person."""
    seeds = read_seeds(keys)
    with open(path, "rb") as f:
        head = f.read(512)
    if head.lstrip().startswith(b"{"):
        root, updates = read_chain(path)
        if not updates:
            raise SigningError(f"{path} holds no key update to sign")
        prev = extend(root, updates[:-1], str(path))
        last = updates[-1]
        for seed in seeds:
            last = _signed(last, seed)
        write_chain(path, root, [*updates[:-1], last])
        return f"{path}: {signed_enough(last, prev)}"
    return sign_bank(path, seeds, check_key)


def sign_bank(path: Path, seeds: list[bytes], check_key: Path | None = None) -> str:
    """A bank file with more signatures on its manifest: the manifest member is written again, every byte
    after it copied as it was (the squashfs, the hash tree and the chunk index are what the others signed).
    The files are checked against the manifest first: a signer vouches for what is in the bank."""
    from builder.image import read_bank

    with read_bank(path) as bank:
        if bank.encrypted:
            if check_key is None:
                raise SigningError(f"{path} is encrypted: give --device-key KEY (a recipient's) so its files are "
                                   f"checked before you sign them")
            check_encrypted(bank, check_key)
        elif not all(bank.verify(m) for m in bank.payload()):
            raise SigningError(f"{path}: its files do not match its manifest (damaged or changed): not signing it")
        manifest: dict[str, object] = dict(bank.manifest)
        first = bank.members[SQUASHFS].offset - 512  # the first payload member's header
        manifest_header = bank.read(0, 512)
    try:
        for seed in seeds:
            manifest = sign_manifest(manifest, seed)
    except TrustError as e:
        raise SigningError(str(e)) from None
    data = dump_manifest(manifest)
    parse_manifest(data, "signed manifest")
    old = tarfile.TarInfo.frombuf(manifest_header, tarfile.ENCODING, "surrogateescape")
    info = tarfile.TarInfo(MANIFEST)
    info.size, info.mode, info.mtime = len(data), old.mode, old.mtime
    head = info.tobuf(format=tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512)
    tmp = path.with_name(f".{path.name}.signing-{os.getpid()}")

    def write(fd: int) -> None:
        durable.write_all(fd, head)
        with open(path, "rb") as src:
            src.seek(first)
            while block := src.read(4 << 20):
                durable.write_all(fd, block)

    try:
        durable.fill_file(str(tmp), write)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    durable.fsync_dir(str(path.parent))
    signers = [str(s["key"]) for s in manifest["signatures"]]  # type: ignore[attr-defined]
    return f"{path}: image {manifest['id']} is signed by key{'s' if len(signers) > 1 else ''} {', '.join(signers)}"


def check_encrypted(bank: Any, device_key: Path) -> None:
    """Decrypt an encrypted bank with a recipient's key into a scratch directory (every chunk checked)."""
    import tempfile

    from overlay_layout import encryption

    try:
        key = encryption.content_key(bank.manifest, str(device_key), bank.path)
        with tempfile.TemporaryDirectory(prefix="bankboot-check-") as tmp:
            encryption.fill(bank, tmp, key, None)
    except LayoutError as e:
        raise SigningError(str(e)) from None


# -- what bankboot image adds ------------------------------------------------------------------------------
def finish_manifest(manifest: dict[str, Any], files: list[Path], sign: tuple[Path, ...], key_updates: Path | None,
                    encrypt_to: tuple[Path, ...], tmp: Path) -> tuple[dict[str, Any], list[Path]]:
    """The manifest with its key updates, its encryption and its signatures (in that order: the signatures
    cover the others), and the payload files to put in the bank (encrypted copies when encrypting, in
    `tmp`/encrypted under the same names)."""
    from overlay_layout import encryption

    seeds = read_seeds(sign)
    if key_updates is not None:
        manifest["key_updates"] = verified_chain(key_updates)
        if seeds:  # the image must verify under the set its chain leads to, or a device could not boot it
            root, updates = read_chain(key_updates)
            last = set_of(updates[-1], extend(root, updates[:-1], str(key_updates))) if updates else root
            have = {key_id(ed25519.keypair(s)[0]) for s in seeds}
            if len(have & set(last.keys)) < last.threshold:
                raise SigningError(f"--sign: the image must be signed by {last.threshold} of the keys its key updates "
                                   f"put in force ({last.describe()}), or devices could not boot it once committed")
    out = files
    if encrypt_to:
        try:
            recipients = [encryption.read_recipient(str(p))[1] for p in encrypt_to]
        except TrustError as e:
            raise SigningError(str(e)) from None
        key, manifest["encryption"] = encryption.seal_content_key(recipients)
        (tmp / "encrypted").mkdir()
        out = [tmp / "encrypted" / p.name for p in files]  # a member's name is its file's (pack.write_bank)
        encryption.encrypt_members(manifest, key, {p.name: str(p) for p in files},
                                   {p.name: str(q) for p, q in zip(files, out, strict=True)})
    try:
        for seed in seeds:
            manifest = sign_manifest(manifest, seed)
    except TrustError as e:
        raise SigningError(str(e)) from None
    return manifest, out
