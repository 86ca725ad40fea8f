"""Who may be booted: ed25519 signatures over the manifest (libsodium through ed25519.py), sets of trusted
public keys with a threshold ("any one of these keys", or "at least N of them"), semantic versions for the
anti-rollback floor.

Key files are one line each:
    private: bankboot-ed25519-private <base64 32-byte seed>
    public:  bankboot-ed25519 <base64 32-byte key> [comment]
A key id is the first 16 hex digits of the sha256 of the public key bytes.

A manifest carries its signatures as a list, `signatures: [{"key": id, "signature": hex}, ...]`, each over the
same bytes: the canonical manifest without that list, so adding one (`bankboot sign`) changes nothing else.
Manifests from before the list have one `key` and one `signature`, over the manifest without `signature`;
they are still read (the same signed bytes) but no longer written. A key counts once towards a threshold,
however many of its signatures a manifest lists."""

from __future__ import annotations

import binascii
import os
import sys

from overlay_layout.contract import CONF, TRUST_DIR, InitramfsConf, archive_path, split_semver
from overlay_layout.errors import BankbootError
from overlay_layout.layout import POINTERS, TRUST_FILE, LayoutError
from overlay_layout.manifest import dump_manifest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from overlay_layout.records import Manifest
    from overlay_layout.state import Banks

PUBLIC_TAG = "bankboot-ed25519"
PRIVATE_TAG = "bankboot-ed25519-private"
SIGNATURE_FIELDS = ("signature", "signatures")  # what the signed bytes leave out


class TrustError(BankbootError):
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
    # The builtin SHA-256, hashing.py's default in the frozen program: naming its keys is all the hashing a
    # plain boot does, and importing hashing for it cost every boot a module.
    if getattr(sys, "frozen", False) and not TYPE_CHECKING:
        from _sha256 import sha256
    else:
        from hashlib import sha256

    return str(sha256(public).hexdigest()[:16])


def decode_key(text: str, what: str) -> bytes:
    """A 32-byte key from its base64 text; TrustError names `what` when it is not one."""
    try:
        raw = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise TrustError(f"{what}: not base64") from None
    if len(raw) != 32:
        raise TrustError(f"{what}: a key is 32 bytes, this one is {len(raw)}")
    return raw


def read_key_file(path: str, tag: str, kind: str, comment_ok: bool) -> bytes:
    """The key in a one-line key file whose first word is `tag` (kind names it in errors)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise TrustError(f"cannot read {kind} key {path}: {e.strerror}") from e
    except UnicodeDecodeError:
        text = ""
    return parse_key(text, path, tag, kind, comment_ok)


def parse_key(text: str, where: str, tag: str, kind: str, comment_ok: bool) -> bytes:
    parts = text.split()
    if len(parts) < 2 or parts[0] != tag or (len(parts) > 2 and not comment_ok):
        raise TrustError(f"{where} is not a bankboot {kind} key (expected '{tag} <base64>')")
    return decode_key(parts[1], where)


def parse_public_key(text: str, where: str) -> bytes:
    """A public key file's content (`where` names it in errors)."""
    return parse_key(text, where, PUBLIC_TAG, "public", comment_ok=True)


def read_public_key(path: str) -> bytes:
    return read_key_file(path, PUBLIC_TAG, "public", comment_ok=True)


def read_private_key(path: str) -> bytes:
    return read_key_file(path, PRIVATE_TAG, "private", comment_ok=False)


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


def _ids(ids: Sequence[str] | set[str]) -> str:
    return ", ".join(sorted(ids)) or "none"


class KeySet:
    """Keys trusted at once and how many of them must sign (threshold). `serial` is the key update that made
    the set (0: the initramfs's own root keys), `chain` the key updates from the root to it (keychain.py),
    `retired` the keys earlier sets trusted and this one does not, with the serial that retired each."""

    __slots__ = ("chain", "keys", "retired", "serial", "threshold")

    def __init__(self, keys: dict[str, bytes], threshold: int = 1, serial: int = 0,
                 retired: dict[str, int] | None = None, chain: tuple[dict[str, Any], ...] = ()) -> None:
        self.keys, self.threshold, self.serial = keys, threshold, serial
        self.retired = retired or {}
        self.chain = chain

    def describe(self) -> str:
        """"keys a, b (any one)", "keys a, b, c (any 2)"."""
        how = "any one" if self.threshold == 1 else f"any {self.threshold}"
        return f"key{'s' if len(self.keys) != 1 else ''} {_ids(set(self.keys))} ({how})"

    def count(self, message: bytes, sigs: Sequence[tuple[object, object]], need: int | None = None
              ) -> tuple[list[str], list[str]]:
        """(ids of the trusted keys whose signature of `message` verifies, ids whose signature does not),
        each key once whatever the list repeats; stops once `need` (default: the threshold) verified."""
        from overlay_layout import ed25519

        need = self.threshold if need is None else need
        valid: list[str] = []
        bad: list[str] = []
        for kid, sig in sigs:
            if not isinstance(kid, str) or kid not in self.keys or kid in valid:
                continue
            try:
                ok = isinstance(sig, str) and ed25519.verify(self.keys[kid], message, bytes.fromhex(sig))
            except ValueError:
                ok = False
            except ed25519.SodiumError as e:
                raise TrustError(f"cannot check a signature: {e}") from e
            if ok:
                valid.append(kid)
                if kid in bad:
                    bad.remove(kid)
                if len(valid) >= need:
                    break
            elif kid not in bad:
                bad.append(kid)
        return valid, bad

    def refusal(self, manifest: Mapping[str, object]) -> str | None:
        """Why an image can never verify under this set, from the key ids that signed it (no signature is
        checked: the plan uses this for every image at each boot); None when it may. Unsigned images are
        left to the full check (an initramfs may accept them)."""
        sigs = signatures_of(manifest)
        if not sigs:
            return None
        signers = {kid for kid, _ in sigs if isinstance(kid, str)}
        if len(signers & set(self.keys)) >= self.threshold:
            return None
        return _shortfall(signers, [], [], self)


def _shortfall(signers: set[str], valid: list[str], bad: list[str], keys: KeySet, dup: str = "") -> str:
    """Why `signers` do not meet `keys`' threshold, naming the keys at fault."""
    retired = sorted(signers & set(keys.retired))
    if bad and not valid:
        return f"the signature by key {bad[0]} does not match the manifest (tampered or corrupted)"
    if retired and not valid and set(retired) == signers:
        by = ", ".join(f"{k} (key update {keys.retired[k]})" for k in retired)
        return (f"signed only by retired key{'s' if len(retired) > 1 else ''} {by}, which this device no longer "
                f"trusts; it trusts {keys.describe()}")
    if keys.threshold == 1 and not valid:
        return (f"signed by key {_ids(signers)}, which this device does not trust "
                f"(trusted: {_ids(set(keys.keys))})")
    detail = f"valid: {_ids(valid)}" + (f"; not matching: {_ids(bad)}" if bad else "")
    detail += f"; retired: {_ids(retired)}" if retired else ""
    return (f"signed by {len(valid) if valid or bad else len(signers & set(keys.keys))} of the {keys.threshold} "
            f"trusted keys it needs ({detail}{dup}); this device trusts {keys.describe()}")


# -- signatures ----------------------------------------------------------------------------------------------
def signatures_of(manifest: Mapping[str, object]) -> list[tuple[object, object]]:
    """(key id, hex signature) of each signature a manifest lists, in either form."""
    sigs = manifest.get("signatures")
    if isinstance(sigs, list):
        return [(s.get("key"), s.get("signature")) for s in sigs if isinstance(s, dict)]
    if "signature" in manifest:
        return [(manifest.get("key"), manifest.get("signature"))]
    return []


def signed_bytes(manifest: Mapping[str, object]) -> bytes:
    """What every signature covers: the canonical manifest without its signatures."""
    return dump_manifest({k: v for k, v in manifest.items() if k not in SIGNATURE_FIELDS})


def add_signature(obj: Mapping[str, object], message: bytes, seed: bytes, what: str) -> dict[str, object]:
    """`obj` with `seed`'s signature of `message` added to its `signatures` list (kept sorted by key id);
    a key that signed it already is an error (it would count once anyway)."""
    from overlay_layout import ed25519

    kid = key_id(ed25519.keypair(seed)[0])
    have = [s for s in obj.get("signatures") or [] if isinstance(s, dict)]  # type: ignore[attr-defined]
    if any(s.get("key") == kid for s in have):
        raise TrustError(f"{what} is already signed by key {kid} (a key counts once)")
    entry = {"key": kid, "signature": ed25519.sign(seed, message).hex()}
    return {**obj, "signatures": sorted([*have, entry], key=lambda s: str(s.get("key")))}


def sign_manifest(manifest: Mapping[str, object], seed: bytes) -> dict[str, object]:
    """The manifest with one more signature; the bytes it signs are the others' (nothing else changes)."""
    if "signature" in manifest:
        raise TrustError(f"image {manifest.get('id')} is signed in the single-signature form of older bankboot "
                         f"builds; rebuild it to add signatures")
    body = {k: v for k, v in manifest.items() if k != "signatures"}
    return add_signature({**body, "signatures": manifest.get("signatures") or []}, signed_bytes(body), seed,
                         f"image {manifest.get('id')}")


def verify_manifest(manifest: Mapping[str, object], keys: KeySet | dict[str, bytes], allow_unsigned: bool = False,
                    what: str | None = None) -> str:
    """Returns who signed it ("key <id>", "keys <id>, <id>" or "unsigned (allowed)"); anything else raises
    TrustError with the reason. `what` names the signed object in messages (default "image <id>"; a channel
    document is signed the same way, overlay_layout/net/channel.py)."""
    what = what or f"image {manifest.get('id')}"
    keyset = keys if isinstance(keys, KeySet) else KeySet(keys)
    sigs = signatures_of(manifest)
    if not sigs:
        if allow_unsigned:
            return "unsigned (allowed by this initramfs)"
        raise TrustError(f"{what} is not signed and this device accepts only signed images")
    if not all(isinstance(k, str) and isinstance(s, str) for k, s in sigs):
        raise TrustError(f"{what}: malformed signature fields")
    valid, bad = keyset.count(signed_bytes(manifest), sigs)
    if len(valid) >= keyset.threshold:
        return f"key{'s' if len(valid) > 1 else ''} {', '.join(valid)}"
    signers = [str(k) for k, _ in sigs]
    twice = sorted({k for k in signers if signers.count(k) > 1})
    dup = f"; key {', '.join(twice)} signed more than once, counted once" if twice else ""
    why = _shortfall(set(signers), valid, bad, keyset, dup)
    raise TrustError(f"{what} is {why}" if why.startswith("signed ") else f"{what}: {why}")


def check_manifest_version(manifest: Manifest, where: str) -> None:
    try:
        parse_version(manifest["version"])
        if "min_bankboot" in manifest:
            parse_version(manifest["min_bankboot"])
    except TrustError as e:
        raise LayoutError(f"{where}: {e}") from e


class Policy:
    """The device's trust settings, as the initramfs was built: its root keys and their threshold, whether
    unsigned images or downgrades below the floor may be accepted, where the device's decryption key is.
    Read from an initramfs's trust directory and initramfs.conf (overlay_layout.contract). The keys in force
    are the root keys advanced by the key updates the device committed (in_force, keychain.py)."""

    def __init__(self, keys: dict[str, bytes], allow_unsigned: bool, allow_downgrade: bool,
                 sealed: bool = False, threshold: int = 1, device_key: str = "") -> None:
        self.root = KeySet(keys, threshold)
        self.allow_unsigned = allow_unsigned
        self.allow_downgrade = allow_downgrade
        self.sealed = sealed
        self.device_key = device_key

    @property
    def keys(self) -> dict[str, bytes]:
        return self.root.keys

    @classmethod
    def of(cls, conf: InitramfsConf, keys: dict[str, bytes]) -> Policy:
        return cls(keys, conf.unsigned, conf.downgrade, conf.sealed, conf.threshold, conf.device_key)

    @classmethod
    def load(cls, root: str = "/") -> Policy:
        """The policy of the initramfs whose files are under `root` (the init's own, or bankctl's kit)."""
        conf = InitramfsConf.read(os.path.join(root, archive_path(CONF)))
        return cls.of(conf, load_trusted(os.path.join(root, archive_path(TRUST_DIR))))

    def check(self, manifest: Manifest, running_version: str, keys: KeySet | None = None) -> str:
        """Signature (against `keys`, default the root keys) and the image's minimum bankboot version;
        returns who signed it."""
        who = verify_manifest(manifest, keys or self.root, self.allow_unsigned)
        need = manifest.get("min_bankboot")
        if need and version_lt(running_version, need):
            raise TrustError(f"image {manifest.get('id')} needs bankboot {need} or newer; this device runs "
                             f"{running_version}")
        return who

    def in_force(self, banks: Banks, repair: bool = False) -> KeySet:
        """The keys in force on this banks partition: the root keys, advanced by the key updates in its
        trust file and those carried by its committed images (keychain.in_force). Warnings go to
        banks.warnings; `repair` writes the trust file when it is behind (at boot, and after a commit).
        A device that never rotated pays for one stat and reading its good images' small manifests."""
        manifests = [banks.manifest(image) for image in committed_images(banks)]
        if not os.path.lexists(os.path.join(banks.root, TRUST_FILE)) and \
                not any("key_updates" in m for m in manifests):
            return self.root
        from overlay_layout.keychain import in_force, save_trust_file

        keys, warnings, stale = in_force(self.root, banks.root, manifests)
        for w in warnings:
            banks._warn(w)
        if repair and stale:
            try:
                save_trust_file(banks.root, keys.chain)
            except OSError as e:
                banks._warn(f"cannot write the trust file on the banks partition ({e.strerror}); the keys in force "
                            f"are taken from the images again at the next boot")
        return keys


def committed_images(banks: Banks) -> list[str]:
    """The images whose key updates count: the committed ones, current first. Committed is what the state
    file says is good (mark-good wrote it) and current and previous (good by construction): re-pointing
    `current` away from the image that committed a rotation does not lose its chain. Never a trial, nor a
    trial given up: its key update was never committed."""
    st = banks.load()
    first = [p for p in map(banks.read_pointer, POINTERS) if p]  # Banks's reading: a damaged pointer is a warning
    out = []
    for image in [*first, *banks.layout.images()]:
        if image not in out and os.path.isdir(banks.layout.image_dir(image)) and \
                banks.image_state(st, image).get("state") == "good":
            out.append(image)
    return out


def init_policy(conf: InitramfsConf) -> Policy:
    """The running init's policy from its initramfs.conf, already read (`conf`), and its trust directory."""
    return Policy.of(conf, load_trusted("/" + archive_path(TRUST_DIR)))


def boot_keys(banks: Banks, policy: Policy) -> KeySet:
    """The keys this boot checks images against (written back to the trust file when it was behind), and
    the plan told which images they can never verify (banks.untrusted): the init's and the model's one
    sequence."""
    keys = policy.in_force(banks, repair=True)
    banks.untrusted = keys.refusal
    return keys
