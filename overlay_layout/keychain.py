"""Key updates: how the keys a device trusts change over its life without a new initramfs.

A key update states a whole new set of trusted keys and its threshold, with a serial one above the set it
replaces, and carries its own signatures (over DOMAIN + the canonical update without them). It is accepted
only when signed by enough keys of the set in force (its threshold) *and* by enough keys of the new set:
the first says the owner of today's keys wants it, the second that the new keys exist and sign, so an
image signed for the new set is not stranded. Updates form a chain from the initramfs's root keys (serial
0): update 1, 2, ... Each bank may carry the chain (`key_updates` in its signed manifest, all of it, so a
device that skipped releases catches up); when such a bank commits, the device keeps the chain in
TRUST_FILE on the banks partition (written crash-safely, durable.py).

The keys in force are the root keys advanced by the longest chain that verifies link by link from them,
taken from the trust file and from the committed images (good in the state file, current, previous),
one extending the other. So nothing on the partition can widen the set: an edited or planted file or image does not
verify; deleting the trust file only takes the device back to the chain its images carry, and at worst to
the initramfs's own keys. Two updates with one serial (two key updates racing) are refused, never mixed."""

from __future__ import annotations

import os

from overlay_layout import durable, jsontext
from overlay_layout.layout import TRUST_FILE, LayoutError
from overlay_layout.manifest import check_signatures, dump_manifest
from overlay_layout.trust import KeySet, TrustError, add_signature, decode_key, key_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from overlay_layout.state import Banks
    from overlay_layout.trust import Policy

DOMAIN = b"bankboot key update 1\n"  # what an update's signatures sign starts with: never a manifest's bytes
MAX_KEYS = 32
MAX_CHAIN = 64
MAX_TRUST_FILE = 1 << 20
BODY = ("serial", "threshold", "keys")


def parse_update(u: object, where: str, signed: bool = True) -> dict[str, Any]:
    """One key update, checked field by field; TrustError names what is wrong. A set with no key (an update
    that retires every key) or a threshold it cannot meet is refused: it would trust nothing."""
    if not isinstance(u, dict) or set(u) - {*BODY, "signatures"} or not set(BODY) <= set(u):
        raise TrustError(f"{where}: a key update is an object with 'serial', 'threshold', 'keys' and 'signatures'")
    serial, threshold, keys = u["serial"], u["threshold"], u["keys"]
    if not isinstance(serial, int) or isinstance(serial, bool) or not 0 < serial <= MAX_CHAIN:
        raise TrustError(f"{where}: 'serial' must be a number from 1 to {MAX_CHAIN}")
    what = f"{where}: key update {serial}"
    if not isinstance(keys, dict) or not keys:
        raise TrustError(f"{what} names no keys: it would retire every key and trust nothing")
    if len(keys) > MAX_KEYS:
        raise TrustError(f"{what} names {len(keys)} keys, more than {MAX_KEYS}")
    for kid, text in keys.items():
        if not isinstance(text, str) or key_id(decode_key(text, f"{what}: key {kid}")) != kid:
            raise TrustError(f"{what}: key {kid!r} is not the id of the key given with it")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 < threshold <= len(keys):
        raise TrustError(f"{what}: threshold {threshold!r} must be from 1 to its {len(keys)} key(s)")
    if signed or "signatures" in u:
        try:
            check_signatures(u.get("signatures"), what)
        except LayoutError as e:
            raise TrustError(str(e)) from e
    return u


def parse_chain(chain: object, where: str) -> list[dict[str, Any]]:
    """A chain of key updates: serials 1, 2, 3 ... in order."""
    if not isinstance(chain, list) or len(chain) > MAX_CHAIN:
        raise TrustError(f"{where}: 'key_updates' must be a list of at most {MAX_CHAIN} key updates")
    out = [parse_update(u, where) for u in chain]
    for n, u in enumerate(out, 1):
        if u["serial"] != n:
            raise TrustError(f"{where}: key update {u['serial']} is number {n} of the chain: a chain starts at 1 "
                             f"and counts up by one")
    return out


def body_of(u: Mapping[str, Any]) -> dict[str, Any]:
    return {k: u[k] for k in BODY}


def update_bytes(u: Mapping[str, Any]) -> bytes:
    """What an update's signatures sign."""
    return DOMAIN + dump_manifest(body_of(u))


def new_update(serial: int, keys: Mapping[str, bytes], threshold: int) -> dict[str, Any]:
    """An unsigned key update (bankboot key-update adds the signatures)."""
    import binascii

    u = {"serial": serial, "threshold": threshold,
         "keys": {kid: binascii.b2a_base64(pub, newline=False).decode() for kid, pub in sorted(keys.items())}}
    return parse_update(u, "new key update", signed=False)


def sign_update(u: Mapping[str, Any], seed: bytes) -> dict[str, Any]:
    return add_signature(u, update_bytes(u), seed, f"key update {u['serial']}")


def set_of(u: Mapping[str, Any], prev: KeySet) -> KeySet:
    """The set an update states, after `prev` (what it retires is what `prev` trusted and it does not)."""
    keys = {kid: decode_key(text, kid) for kid, text in u["keys"].items()}
    retired = {k: s for k, s in prev.retired.items() if k not in keys}
    retired.update({k: u["serial"] for k in prev.keys if k not in keys})
    return KeySet(keys, u["threshold"], u["serial"], retired, (*prev.chain, dict(u)))


def verify_update(u: Mapping[str, Any], prev: KeySet, where: str) -> KeySet:
    """The set after `u`, which must follow `prev` and be signed by enough keys of both."""
    serial = u["serial"]
    if serial != prev.serial + 1:
        raise TrustError(f"{where}: key update {serial} cannot follow the keys in force (serial {prev.serial}): "
                         f"updates apply one after the other")
    new = set_of(u, prev)
    message = update_bytes(u)
    for which, keys in (("in force", prev), ("it names", new)):
        valid, bad = keys.count(message, [(s["key"], s["signature"]) for s in u["signatures"]])
        if len(valid) < keys.threshold:
            signers = sorted({s["key"] for s in u["signatures"]})
            bad_part = f", not matching: {', '.join(bad)}" if bad else ""
            raise TrustError(f"{where}: key update {serial} is signed by {len(valid)} of the {keys.threshold} "
                             f"key(s) it needs from the set {which} ({keys.describe()}; signed by "
                             f"{', '.join(signers)}{bad_part}): below the threshold")
    return new


def same_update(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """One update, whatever signatures each copy carries."""
    return body_of(a) == body_of(b)


def extend(keys: KeySet, chain: Sequence[Mapping[str, Any]], where: str) -> KeySet:
    """The set after `chain` for a device whose keys in force are `keys`: a chain that agrees with the one
    in force and stops at or before it changes nothing; one that goes further is verified link by link; one
    that differs at a serial both have (two key updates racing) is refused."""
    have = keys.chain
    for n, (mine, theirs) in enumerate(zip(have, chain, strict=False), 1):
        if not same_update(mine, theirs):
            raise TrustError(f"{where}: its key update {n} ({_describe(theirs)}) differs from the key update {n} in "
                             f"force on this device ({_describe(mine)}): two key updates with one serial; rebuild "
                             f"it with the chain in force")
    for u in chain[len(have):]:
        keys = verify_update(u, keys, where)
    return keys


def _describe(u: Mapping[str, Any]) -> str:
    return f"keys {', '.join(sorted(u['keys']))}, threshold {u['threshold']}"


def verify_chain(chain: Sequence[Mapping[str, Any]], root: KeySet, where: str) -> KeySet:
    return extend(root, chain, where)


def changes(old: KeySet, new: KeySet) -> str:
    """What moving from `old` to `new` does, for people: keys added and retired, the threshold."""
    added = sorted(set(new.keys) - set(old.keys))
    gone = sorted(set(old.keys) - set(new.keys))
    parts = ([f"adds {', '.join(added)}"] if added else []) + ([f"retires {', '.join(gone)}"] if gone else [])
    if new.threshold != old.threshold:
        parts.append(f"threshold {old.threshold} -> {new.threshold}")
    return f"key update {new.serial}: {', '.join(parts) or 'the same keys'}; trusted then: {new.describe()}"


# -- the trust file ----------------------------------------------------------------------------------------
def read_trust_file(root: KeySet, banks_root: str) -> tuple[KeySet, list[str], bool]:
    """(the root keys advanced by the trust file's chain, warnings, whether the file exists but cannot be
    used). A file that is damaged or does not verify against the root keys counts for nothing."""
    from overlay_layout.jsontext import Damaged, keep_aside, read_json

    path = os.path.join(banks_root, TRUST_FILE)
    try:
        got = read_json(path, MAX_TRUST_FILE)
    except Damaged as e:
        copy = keep_aside(path, e.raw, MAX_TRUST_FILE)
        return root, [f"{path} is damaged ({e}){f'; a copy is kept in {copy}' if copy else ''}: the keys in force "
                      f"are taken from the initramfs and the committed images"], True
    if got is None:
        return root, [], False
    doc = got[0]
    try:
        if not isinstance(doc, dict) or doc.get("format") != 1:
            raise TrustError(f"{path}: not a bankboot trust file (no \"format\": 1)")
        return verify_chain(parse_chain(doc.get("updates"), path), root, path), [], False
    except TrustError as e:
        return root, [f"{e}: it counts for nothing (the keys in force are the initramfs's, advanced by what the "
                      f"committed images carry)"], True


def save_trust_file(banks_root: str, chain: Sequence[Mapping[str, Any]]) -> None:
    data = jsontext.dumps({"format": 1, "updates": list(chain)}, sort_keys=True).encode() + b"\n"
    durable.write_file(os.path.join(banks_root, TRUST_FILE), data)


def in_force(root: KeySet, banks_root: str, manifests: Sequence[Mapping[str, Any]]) -> tuple[KeySet, list[str], bool]:
    """(keys in force, warnings, whether the trust file should be rewritten): the trust file's chain,
    extended by the chains the committed images' manifests carry where they agree with it and go further."""
    keys, warnings, unusable = read_trust_file(root, banks_root)
    on_file = keys.serial
    for m in manifests:
        chain = m.get("key_updates")
        if not chain:
            continue
        where = f"image {m.get('id')}"
        try:
            found = extend(keys, parse_chain(chain, where), where)
        except TrustError as e:
            warnings.append(f"{e}; its key updates are ignored")
            continue
        keys = found if found.serial > keys.serial else keys
    return keys, warnings, unusable or keys.serial > on_file


def commit(banks: Banks, policy: Policy, booted: str | None) -> tuple[str, str | None]:
    """`bankctl mark-good`: commit the running trial, then keep the chain of key updates it carries in the
    trust file. The state's write comes first: a cut before it leaves the trial (and the old keys, which
    its previous image verifies under); a cut after it leaves a committed image carrying the chain, which
    every boot reads again (Policy.in_force) and writes back. Returns (image, what changed or None)."""
    before = policy.in_force(banks)
    image = banks.mark_good(booted)
    after = policy.in_force(banks, repair=True)
    return image, changes(before, after) if after.serial > before.serial else None
