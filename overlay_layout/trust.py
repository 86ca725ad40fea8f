"""Who may be booted: ed25519 signatures over the manifest (libsodium through ed25519.py), trusted
public keys with ids (several at once, for rotation), semantic versions for the anti-rollback floor.

Key files are one line each:
    private: bankboot-ed25519-private <base64 32-byte seed>
    public:  bankboot-ed25519 <base64 32-byte key> [comment]
A key id is the first 16 hex digits of the sha256 of the public key bytes."""

from __future__ import annotations

import binascii
import os

from overlay_layout.contract import CONF, TRUST_DIR, InitramfsConf, archive_path
from overlay_layout.layout import LayoutError
from overlay_layout.manifest import dump_manifest
from overlay_layout.syntax import split_semver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from overlay_layout.records import Manifest

PUBLIC_TAG = "bankboot-ed25519"
PRIVATE_TAG = "bankboot-ed25519-private"


class TrustError(RuntimeError):
    pass


# -- versions ------------------------------------------------------------------------------------------------
def parse_version(text: str) -> tuple[object, ...]:
    """A semantic version as a sortable key; anything else is an error naming the string."""
    parts = split_semver(text or "")
    if parts is None:
        raise TrustError(f"version {text!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD])")
    major, minor, patch, pre, _build = parts
    # A pre-release sorts before its release; its dot parts compare numerically when numeric.
    pre_key: tuple[object, ...] = (1,) if pre is None else (0, *[(0, int(p), "") if p.isdigit() else (1, 0, p)
                                                     for p in pre.split(".")])
    return (int(major), int(minor), int(patch), pre_key)


def version_lt(a: str, b: str) -> bool:
    return parse_version(a) < parse_version(b)


# -- keys ----------------------------------------------------------------------------------------------------
def key_id(public: bytes) -> str:
    from overlay_layout.hashing import sha256

    return str(sha256(public).hexdigest()[:16])


def _b64(text: str, what: str) -> bytes:
    try:
        raw = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):
        raise TrustError(f"{what}: not base64") from None
    if len(raw) != 32:
        raise TrustError(f"{what}: an ed25519 key is 32 bytes, this one is {len(raw)}")
    return raw


def _read_key(path: str, tag: str, kind: str, comment_ok: bool) -> bytes:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise TrustError(f"cannot read {kind} key {path}: {e.strerror}") from None
    return _parse_key(text, path, tag, kind, comment_ok)


def _parse_key(text: str, where: str, tag: str, kind: str, comment_ok: bool) -> bytes:
    parts = text.split()
    if len(parts) < 2 or parts[0] != tag or (len(parts) > 2 and not comment_ok):
        raise TrustError(f"{where} is not a bankboot {kind} key (expected '{tag} <base64>')")
    return _b64(parts[1], where)


def parse_public_key(text: str, where: str) -> bytes:
    """A public key file's content (`where` names it in errors)."""
    return _parse_key(text, where, PUBLIC_TAG, "public", comment_ok=True)


def read_public_key(path: str) -> bytes:
    return _read_key(path, PUBLIC_TAG, "public", comment_ok=True)


def read_private_key(path: str) -> bytes:
    return _read_key(path, PRIVATE_TAG, "private", comment_ok=False)


def load_trusted(directory: str) -> dict[str, bytes]:
    """Every *.pub in `directory`, by key id."""
    keys: dict[str, bytes] = {}
    if not os.path.isdir(directory):
        return keys
    for name in sorted(os.listdir(directory)):
        if name.endswith(".pub"):
            pub = read_public_key(os.path.join(directory, name))
            keys[key_id(pub)] = pub
    return keys


# -- signatures ----------------------------------------------------------------------------------------------
def signed_bytes(manifest: Mapping[str, object]) -> bytes:
    """What the signature covers: the canonical manifest without its signature."""
    return dump_manifest({k: v for k, v in manifest.items() if k != "signature"})


def sign_manifest(manifest: Mapping[str, object], seed: bytes) -> dict[str, object]:
    from overlay_layout import ed25519

    public, _ = ed25519.keypair(seed)
    body = {k: v for k, v in manifest.items() if k != "signature"}
    body["key"] = key_id(public)
    sig = ed25519.sign(seed, signed_bytes(body))
    return {**body, "signature": sig.hex()}


def verify_manifest(manifest: Mapping[str, object], trusted: dict[str, bytes], allow_unsigned: bool = False,
                    what: str | None = None) -> str:
    """Returns who signed it ("key <id>" or "unsigned (allowed)"); anything else raises TrustError with
    the reason. `what` names the signed object in messages (default "image <id>"; a channel document is
    signed the same way, overlay_layout/net/channel.py)."""
    what = what or f"image {manifest.get('id')}"
    sig = manifest.get("signature")
    if sig is None:
        if allow_unsigned:
            return "unsigned (allowed by this initramfs)"
        raise TrustError(f"{what} is not signed and this device accepts only signed images")
    kid = manifest.get("key")
    if not isinstance(kid, str) or not isinstance(sig, str):
        raise TrustError(f"{what}: malformed signature fields")
    if kid not in trusted:
        raise TrustError(f"{what} is signed by key {kid}, which this device does not trust "
                         f"(trusted: {', '.join(sorted(trusted)) or 'none'})")
    from overlay_layout import ed25519

    try:
        good = ed25519.verify(trusted[kid], signed_bytes(manifest), bytes.fromhex(sig))
    except ValueError:
        good = False
    except ed25519.SodiumError as e:
        raise TrustError(f"{what}: cannot check its signature: {e}") from None
    if not good:
        raise TrustError(f"{what}: the signature by key {kid} does not match the manifest "
                         f"(tampered or corrupted)")
    return f"key {kid}"


def check_manifest_version(manifest: Manifest, where: str) -> None:
    try:
        parse_version(manifest["version"])
        if "min_bankboot" in manifest:
            parse_version(manifest["min_bankboot"])
    except TrustError as e:
        raise LayoutError(f"{where}: {e}") from None


class Policy:
    """The device's trust settings, as the initramfs was built: trusted keys, and whether unsigned images
    or downgrades below the floor may be accepted. Read from an initramfs's trust directory and
    initramfs.conf (overlay_layout.contract)."""

    def __init__(self, keys: dict[str, bytes], allow_unsigned: bool, allow_downgrade: bool,
                 sealed: bool = False) -> None:
        self.keys = keys
        self.allow_unsigned = allow_unsigned
        self.allow_downgrade = allow_downgrade
        self.sealed = sealed

    @classmethod
    def of(cls, conf: InitramfsConf, keys: dict[str, bytes]) -> Policy:
        return cls(keys, conf.unsigned, conf.downgrade, conf.sealed)

    @classmethod
    def load(cls, root: str = "/") -> Policy:
        """The policy of the initramfs whose files are under `root` (the init's own, or bankctl's kit)."""
        conf = InitramfsConf.read(os.path.join(root, archive_path(CONF)))
        return cls.of(conf, load_trusted(os.path.join(root, archive_path(TRUST_DIR))))

    def check(self, manifest: Manifest, running_version: str) -> str:
        """Signature and the image's minimum bankboot version; returns who signed it."""
        who = verify_manifest(manifest, self.keys, self.allow_unsigned)
        need = manifest.get("min_bankboot")
        if need and version_lt(running_version, need):
            raise TrustError(f"image {manifest.get('id')} needs bankboot {need} or newer; this device runs "
                             f"{running_version}")
        return who
