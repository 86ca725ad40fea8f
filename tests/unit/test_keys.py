"""Keys over a device's lifetime: several signatures and thresholds, key updates and their chain, the trust
file, revocation, and each bad input the issue names (a key update below the threshold, one that retires
every key, a second key update racing the first, a bank signed twice by the same key)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from overlay_layout import ed25519
from overlay_layout.keychain import (
    TRUST_FILE,
    commit,
    extend,
    new_update,
    parse_chain,
    parse_update,
    sign_update,
    verify_update,
)
from overlay_layout.layout import LayoutError
from overlay_layout.manifest import dump_manifest, parse_manifest
from overlay_layout.policy import BAD, GOOD, ImageInfo, Snapshot, plan_boot
from overlay_layout.stage import StageError, stage
from overlay_layout.state import Banks, StateError
from overlay_layout.trust import (
    KeySet,
    Policy,
    TrustError,
    boot_keys,
    key_id,
    sign_manifest,
    signed_bytes,
    verify_manifest,
)
from tests.banks import boot, make_bank

SEEDS = [hashlib.sha256(b"test key %d" % i).digest() for i in range(5)]
PUB = [ed25519.keypair(s)[0] for s in SEEDS]
ID = [key_id(p) for p in PUB]
BASE = {"format": 1, "id": "1.1.0-abc", "version": "1.1.0", "arch": "amd64", "size": 8, "sha256": "b" * 64,
        "created": "1970-01-01T00:00:00Z"}


def keyset(*n: int, threshold: int = 1) -> KeySet:
    return KeySet({ID[i]: PUB[i] for i in n}, threshold)


def update(serial: int, keys: tuple[int, ...], signers: tuple[int, ...], threshold: int = 1) -> dict:
    u = new_update(serial, {ID[i]: PUB[i] for i in keys}, threshold)
    for i in signers:
        u = sign_update(u, SEEDS[i])
    return u


def signed(*n: int, manifest: dict | None = None) -> dict:
    m = dict(manifest or BASE)
    for i in n:
        m = sign_manifest(m, SEEDS[i])
    return m


# -- several signatures, thresholds ----------------------------------------------------------------------------
def test_a_threshold_counts_distinct_keys_and_a_key_signing_twice_counts_once() -> None:
    two_of_three = keyset(0, 1, 2, threshold=2)
    with pytest.raises(TrustError, match=r"signed by 1 of the 2 trusted keys it needs"):
        verify_manifest(signed(0), two_of_three)
    m = signed(0)
    twice = {**m, "signatures": m["signatures"] * 2}  # the same key's signature listed twice
    parse_manifest(dump_manifest(twice), "m")  # readable: the verifier counts
    with pytest.raises(TrustError, match=rf"signed by 1 of the 2 .*key {ID[0]} signed more than once, counted once"):
        verify_manifest(twice, two_of_three)
    assert set(verify_manifest(signed(0, 2), two_of_three).removeprefix("keys ").split(", ")) == {ID[0], ID[2]}
    assert verify_manifest(signed(1), keyset(0, 1, 2)) == f"key {ID[1]}"  # threshold 1: any one


def test_adding_a_signature_changes_nothing_else_and_a_key_signs_once() -> None:
    one, two = signed(0), signed(0, 1)
    assert signed_bytes(one) == signed_bytes(two) == signed_bytes(BASE)
    assert {k: v for k, v in two.items() if k != "signatures"} == BASE
    assert [s["key"] for s in two["signatures"]] == sorted([ID[0], ID[1]])
    with pytest.raises(TrustError, match=f"already signed by key {ID[0]}"):
        sign_manifest(two, SEEDS[0])


def test_a_bad_extra_signature_is_noise_but_alone_it_is_tampering() -> None:
    m = signed(0)
    junk = {"key": ID[1], "signature": "00" * 64}
    assert verify_manifest({**m, "signatures": [*m["signatures"], junk]}, keyset(0, 1)) == f"key {ID[0]}"
    with pytest.raises(TrustError, match=f"the signature by key {ID[1]} does not match the manifest"):
        verify_manifest({**m, "signatures": [junk]}, keyset(0, 1))


def test_the_older_single_signature_form_still_verifies_and_cannot_be_mixed() -> None:
    body = {**BASE, "key": ID[0]}
    legacy = {**body, "signature": ed25519.sign(SEEDS[0], dump_manifest(body)).hex()}
    assert verify_manifest(parse_manifest(dump_manifest(legacy), "m"), keyset(0)) == f"key {ID[0]}"
    with pytest.raises(TrustError, match="single-signature form"):
        sign_manifest(legacy, SEEDS[1])
    with pytest.raises(LayoutError, match="either 'signatures' or the older"):
        parse_manifest(dump_manifest({**signed(0), "key": ID[0]}), "m")
    with pytest.raises(LayoutError, match="names starting with _ are never stored"):
        parse_manifest(dump_manifest({**BASE, "_signed_by": "key x"}), "m")


# -- key updates -------------------------------------------------------------------------------------------------
def test_a_key_update_below_the_threshold_of_either_set_is_refused() -> None:
    root = keyset(0, 1, threshold=2)
    with pytest.raises(TrustError, match=r"key update 1 is signed by 1 of the 2 key\(s\) it needs from the set in "
                                         r"force .*below the threshold"):
        verify_update(update(1, (1, 2), (0,)), root, "bank")
    with pytest.raises(TrustError, match=r"signed by 0 of the 1 key\(s\) it needs from the set it names"):
        verify_update(update(1, (3,), (0, 1)), root, "bank")
    new = verify_update(update(1, (1, 3), (0, 1)), root, "bank")  # key 1 is in both sets
    assert set(new.keys) == {ID[1], ID[3]} and new.retired == {ID[0]: 1} and new.serial == 1


def test_a_key_update_that_retires_every_key_or_cannot_meet_its_threshold_is_refused() -> None:
    with pytest.raises(TrustError, match="names no keys: it would retire every key"):
        parse_update({"serial": 1, "threshold": 1, "keys": {}, "signatures": []}, "bank")
    with pytest.raises(TrustError, match="threshold 3 must be from 1 to its 2"):
        new_update(1, {ID[0]: PUB[0], ID[1]: PUB[1]}, 3)
    u = update(1, (1,), (0, 1))
    with pytest.raises(TrustError, match="is not the id of the key given with it"):
        parse_update({**u, "keys": {ID[2]: u["keys"][ID[1]]}}, "bank")
    with pytest.raises(TrustError, match="a chain starts at 1 and counts up by one"):
        parse_chain([update(2, (1,), (0, 1))], "bank")


def test_a_second_key_update_with_one_serial_is_refused_never_mixed() -> None:
    root = keyset(0)
    mine = extend(root, [update(1, (1,), (0, 1))], "trust file")
    other = [update(1, (2,), (0, 2))]  # also well signed: two key updates racing
    with pytest.raises(TrustError, match="its key update 1 .* differs from the key update 1 in force on this device "
                                         ".*two key updates with one serial"):
        extend(mine, other, "bank")
    assert extend(mine, [], "bank") is mine and extend(mine, list(mine.chain), "bank") is mine
    # the same update, with another signature on it, is the same update
    assert extend(mine, [sign_update(mine.chain[0], SEEDS[2])], "bank") is mine


# -- on a device ---------------------------------------------------------------------------------------------
@pytest.fixture
def device(tmp_path: Path):
    """A banks partition whose first image is signed by key 0, the initramfs trusting key 0."""
    root = tmp_path / "banks"
    (root / "overlay").mkdir(parents=True)
    policy = Policy({ID[0]: PUB[0]}, allow_unsigned=False, allow_downgrade=False)
    first = make_bank(tmp_path / "first.bank", "1.0.0", b"first", seeds=(SEEDS[0],))
    banks = Banks(str(root))
    stage(banks, str(tmp_path / "first.bank"), policy, "9.9.9", machine="x86_64")
    boot(banks)
    banks.mark_good(first)
    return banks, policy, first


def rotate(banks: Banks, policy: Policy, tmp_path: Path) -> str:
    """Commit 2.0.0, which carries key update 1 (key 1 replaces key 0), signed by both."""
    image = make_bank(tmp_path / "rotate.bank", "2.0.0", b"rotation", seeds=(SEEDS[0], SEEDS[1]),
                      key_updates=[update(1, (1,), (0, 1))])
    m = stage(banks, str(tmp_path / "rotate.bank"), policy, "9.9.9", machine="x86_64")
    assert m["_keys"] == f"key update 1: adds {ID[1]}, retires {ID[0]}; trusted then: key {ID[1]} (any one)"
    assert policy.in_force(banks).serial == 0  # a trial's key update is not in force before it commits
    assert boot(banks).image == image
    assert commit(banks, policy, image) == (image, m["_keys"])
    return image


def test_a_rotation_commits_and_the_retired_key_is_refused_at_stage_boot_and_rollback(device, tmp_path) -> None:
    banks, policy, first = device
    image = rotate(banks, policy, tmp_path)
    keys = policy.in_force(banks)
    assert (keys.serial, set(keys.keys), keys.retired) == (1, {ID[1]}, {ID[0]: 1})
    assert json.loads((Path(banks.root) / TRUST_FILE).read_text())["updates"][0]["serial"] == 1
    make_bank(tmp_path / "old-key.bank", "3.0.0", b"signed by the old key", seeds=(SEEDS[0],))
    before = sorted(os.listdir(banks.layout.overlay))
    with pytest.raises(StageError, match=f"signed only by retired key {ID[0]} \\(key update 1\\)"):
        stage(banks, str(tmp_path / "old-key.bank"), policy, "9.9.9", machine="x86_64")
    assert sorted(os.listdir(banks.layout.overlay)) == before
    # previous (the first image, signed by key 0 only) is no candidate at boot, not even a last resort
    fresh = Banks(banks.root)
    boot_keys(fresh, policy)
    plan = fresh.begin_boot()
    assert [c.image for c in plan.candidates] == [image]
    status = {i["id"]: i for i in fresh.status()["images"]}
    assert "retired" in status[first]["untrusted"]
    with pytest.raises(StateError, match=f"previous image {first} is signed only by retired key {ID[0]}"):
        fresh.rollback()


def test_a_bank_its_own_key_update_would_strand_is_refused(device, tmp_path) -> None:
    banks, policy, _ = device
    make_bank(tmp_path / "stranded.bank", "2.0.0", b"x", seeds=(SEEDS[0],), key_updates=[update(1, (1,), (0, 1))])
    with pytest.raises(StageError, match="under the keys its own key update 1 puts in force: committing it would "
                                         "leave it unbootable"):
        stage(banks, str(tmp_path / "stranded.bank"), policy, "9.9.9", machine="x86_64")
    assert banks.layout.pointer("next") is None


def test_a_racing_key_update_is_refused_at_stage(device, tmp_path) -> None:
    banks, policy, _ = device
    rotate(banks, policy, tmp_path)
    make_bank(tmp_path / "race.bank", "3.0.0", b"race", seeds=(SEEDS[1], SEEDS[2]),
              key_updates=[update(1, (2,), (0, 2))])
    with pytest.raises(StageError, match="two key updates with one serial"):
        stage(banks, str(tmp_path / "race.bank"), policy, "9.9.9", machine="x86_64")
    assert banks.layout.pointer("next") is None


def test_the_trust_file_deleted_garbled_or_forged_never_widens_the_keys(device, tmp_path) -> None:
    banks, policy, _ = device
    rotate(banks, policy, tmp_path)
    path = Path(banks.root) / TRUST_FILE
    path.unlink()
    fresh = Banks(banks.root)
    assert set(boot_keys(fresh, policy).keys) == {ID[1]}  # the committed image carries the chain
    assert path.is_file()  # and the boot wrote it back
    path.write_bytes(b"\x00garbage")
    fresh = Banks(banks.root)
    assert set(boot_keys(fresh, policy).keys) == {ID[1]}
    assert any("damaged" in w for w in fresh.warnings) and (Path(banks.root) / f"{TRUST_FILE}.damaged").is_file()
    # a chain someone wrote with their own key: it does not verify from the initramfs's keys
    forged = {"format": 1, "updates": [update(1, (4,), (4,))]}
    path.write_text(json.dumps(forged))
    fresh = Banks(banks.root)
    keys = boot_keys(fresh, policy)
    assert set(keys.keys) == {ID[1]} and ID[4] not in keys.keys
    assert any("counts for nothing" in w for w in fresh.warnings), fresh.warnings


def test_pointers_moved_off_the_rotating_image_with_the_trust_file_deleted_keep_the_keys(device, tmp_path) -> None:
    banks, policy, first = device
    rotate(banks, policy, tmp_path)
    (Path(banks.root) / TRUST_FILE).unlink()
    banks.layout.set_pointer("current", first)  # someone with the card: both pointers at the old image
    banks.layout.set_pointer("previous", first)
    fresh = Banks(banks.root)
    keys = boot_keys(fresh, policy)
    assert set(keys.keys) == {ID[1]}  # the committed image's chain still counts: it is good in the state file
    plan = fresh.begin_boot()
    assert first not in [c.image for c in plan.candidates] and plan.candidates[0].why == "current"


def test_without_the_trust_file_and_a_chain_in_the_images_the_device_is_back_at_the_initramfs_keys(
        device, tmp_path) -> None:
    banks, policy, _ = device
    (Path(banks.root) / TRUST_FILE).write_text(json.dumps({"format": 1, "updates": [update(1, (0, 1), (0, 1))]}))
    assert set(policy.in_force(banks).keys) == {ID[0], ID[1]}
    (Path(banks.root) / TRUST_FILE).unlink()  # the images carry no chain: the initramfs's own keys again
    assert policy.in_force(banks) is policy.root


def test_revoked_images_are_never_candidates_even_when_nothing_else_can_boot() -> None:
    images = {"a": ImageInfo("a", GOOD, version="1.0.0"), "b": ImageInfo("b", BAD, version="1.1.0", reason="x"),
              "c": ImageInfo("c", None, version="0.9.0")}
    snap = Snapshot("a", None, None, images, untrusted=(("a", "signed only by retired key k"),
                                                         ("c", "signed only by retired key k")))
    plan = plan_boot(snap)
    assert [c.image for c in plan.candidates] == ["b"]  # the bad one, as a last resort: it is still signed
    assert "current points at a, which is signed only by retired key k: it is not booted" in plan.notes
    assert plan_boot(snap, select="c").candidates[0].image == "b"


def test_an_initramfs_threshold_its_keys_cannot_meet_is_refused(tmp_path: Path) -> None:
    from builder.fstree import FsTree
    from builder.initramfs import TrustPolicy, add_trust
    from builder.keys import keygen
    from overlay_layout.contract import InitramfsConf

    pubs = tuple(keygen(tmp_path / n)[1] for n in ("a", "b"))
    conf = InitramfsConf()
    add_trust(FsTree(), TrustPolicy(pubs, threshold=2), conf)
    assert conf.threshold == 2 and len(conf.trusted) == 2
    with pytest.raises(ValueError, match="--threshold 3: an image must be signed by 1 to the 2 trusted key"):
        add_trust(FsTree(), TrustPolicy(pubs, threshold=3), InitramfsConf())


def test_a_polled_channel_document_is_checked_against_the_keys_in_force(device, tmp_path, monkeypatch) -> None:
    """After a rotation, bankctl poll takes a channel document signed by the new key and refuses one signed
    only by the retired key, as it would an image (initfs/poll.py asks the keys in force, not the root's)."""
    import time

    from initfs import poll
    from overlay_layout.net.channel import make_document
    from overlay_layout.net.document import Fetched
    from overlay_layout.net.transport import Settings
    from overlay_layout.net.url import parse_url
    from overlay_layout.utctime import format_utc

    banks, policy, _ = device
    rotate(banks, policy, tmp_path)
    url = "http://h/stable.json"
    now = time.time()
    fields = {"channel": "stable", "version": "3.0.0", "image": "3.0.0-abcd", "arch": "amd64",
              "boards": ["qemu-x86_64"], "bank": "banks/3.0.0-abcd.bank", "size": 1000, "manifest": "a" * 64,
              "published": format_utc(now), "expires": format_utc(now + 86400)}
    dev = poll.Device(banks, policy, "qemu-x86_64", "9.9.9", {}, Settings())

    def fetch_channel(seed: bytes):
        body = make_document(fields, seed)
        monkeypatch.setattr(poll, "fetch_document", lambda *a: Fetched(200, body, None, parse_url(url), 1, len(body)))
        return poll.fetch_channel(dev, poll.Options(url), {}, Settings(), lambda line: None)[0]

    assert fetch_channel(SEEDS[1]).signed_by == f"key {ID[1]}"
    with pytest.raises(poll.PollFailed, match=f"is signed only by retired key {ID[0]} \\(key update 1\\)"):
        fetch_channel(SEEDS[0])


@pytest.mark.parametrize("form", ["signatures", "signature"])
def test_a_signed_image_without_its_hash_tree_is_never_mounted(form: str, tmp_path: Path, monkeypatch) -> None:
    """A signed manifest (either form) promises dm-verity: without its hash tree the image is refused
    before anything is attached or mounted, never read unchecked."""
    from initfs import bootflow
    from overlay_layout.layout import Layout

    m = sign_manifest(BASE, SEEDS[0])
    if form == "signature":  # the older single-signature form
        m = {k: v for k, v in m.items() if k != "signatures"}
        m.update({"key": ID[0], "signature": "00" * 64})
    lay = Layout(str(tmp_path))
    monkeypatch.setattr(lay, "check_image", lambda image: None)  # what is on disk is not the point here
    monkeypatch.setattr(bootflow, "LOWER", str(tmp_path / "lower"))
    monkeypatch.setattr(bootflow, "verify_image", lambda *a: m)
    monkeypatch.setattr(bootflow, "mount", lambda *a: pytest.fail("mounted"))
    with pytest.raises(bootflow.BootError, match="signed but without dm-verity data"):
        bootflow.mount_image(lay, BASE["id"])
