"""Helpers for tests that need a banks partition in a temporary directory: bank files with a stand-in
squashfs, a first installed image, and the development trust policy."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from overlay_layout import chunks
from overlay_layout.layout import Layout
from overlay_layout.manifest import dump_manifest
from overlay_layout.trust import Policy, sign_manifest

# Accepts anything: unsigned images and downgrades (the tests of signatures build their own policies).
DEV = Policy({}, allow_unsigned=True, allow_downgrade=True)


def make_bank(path: Path, version: str, payload: bytes, arch: str = "amd64", persist: list[str] | None = None,
              chunked: bool = False, seed: bytes | None = None, seeds: tuple[bytes, ...] = (),
              key_updates: list[dict] | None = None, encrypt_to: tuple[bytes, ...] = ()) -> str:
    """An unsigned bank file with `payload` as its squashfs (a stand-in: "hsqs" and the bytes). chunked: with a
    chunk index; seed/seeds: sign it with these ed25519 seeds; key_updates: the chain it carries; encrypt_to:
    encrypted for these X25519 public keys (with a chunk index and a stand-in hash tree, padded to 4 KiB)."""
    payload = payload if payload.startswith(b"hsqs") else b"hsqs" + payload
    if encrypt_to:
        payload += bytes(-len(payload) % 4096)
        chunked = True
    digest = hashlib.sha256(payload).hexdigest()
    image_id = f"{version}-{digest[:8]}"
    fields: dict[str, object] = {"format": 1, "id": image_id, "version": version, "arch": arch, "size": len(payload),
                                 "sha256": digest, "created": "1970-01-01T00:00:00Z"}
    if persist:
        fields["persist"] = persist
    members = [("rootfs.squashfs", payload)]
    if chunked:
        index = chunks.dump(chunks.index_of(payload))
        fields["chunks"] = {"size": len(index), "sha256": hashlib.sha256(index).hexdigest(),
                            "count": (len(index) - len(chunks.MAGIC)) // chunks.ENTRY.size}
        members.append((chunks.MEMBER, index))
    if key_updates:
        fields["key_updates"] = key_updates
    if encrypt_to:
        members = _encrypted(fields, payload, members, encrypt_to, path)
    for s in ([seed] if seed else []) + list(seeds):
        fields = sign_manifest(fields, s)
    manifest = dump_manifest(fields)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("manifest.json", manifest), *members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return image_id


def _encrypted(fields: dict, payload: bytes, members: list[tuple[str, bytes]], recipients: tuple[bytes, ...],
               path: Path) -> list[tuple[str, bytes]]:
    """The members of an encrypted bank (overlay_layout/encryption.py), a stand-in hash tree included."""
    from overlay_layout import encryption

    tree = hashlib.sha256(payload).digest() * 128
    fields["verity"] = {"root_hash": "a" * 64, "salt": "00", "hash_algorithm": "sha256", "data_block_size": 4096,
                        "hash_block_size": 4096, "size": len(tree), "sha256": hashlib.sha256(tree).hexdigest()}
    plain = {"rootfs.squashfs": payload, "rootfs.verity": tree, **dict(members)}
    key, fields["encryption"] = encryption.seal_content_key(list(recipients))
    tmp = path.with_name(path.name + ".parts")
    tmp.mkdir(exist_ok=True)
    files = {name: str(tmp / name) for name in plain}
    for name, data in plain.items():
        Path(files[name]).write_bytes(data)
    out = {name: str(tmp / f"{name}.enc") for name in plain}
    encryption.encrypt_members(fields, key, files, out)
    order = ("rootfs.squashfs", "rootfs.verity", chunks.MEMBER)
    result = [(name, Path(out[name]).read_bytes()) for name in order]
    for f in [*files.values(), *out.values()]:
        os.unlink(f)
    tmp.rmdir()
    return result


def is_complete(root: Path, image: str) -> bool:
    """All of the image is on disk and matches its manifest (what stage verifies before the rename)."""
    lay = Layout(str(root))
    if image in ("1.0.0-base", "0.1.0-planted"):  # made by install_first_image
        return os.path.isfile(lay.squashfs(image))
    try:
        manifest = json.loads(Path(lay.manifest_path(image)).read_text())
        return hashlib.sha256(Path(lay.squashfs(image)).read_bytes()).hexdigest() == manifest["sha256"]
    except (OSError, ValueError):
        return False


def install_first_image(root: Path, image: str = "1.0.0-base") -> None:
    lay = Layout(str(root))
    os.makedirs(lay.image_dir(image))
    Path(lay.squashfs(image)).write_bytes(b"hsqs" + b"\0" * 100)
    # What the state machine reads of a manifest (its version, for the anti-rollback floors).
    Path(lay.manifest_path(image)).write_text(json.dumps({"id": image, "version": image.split("-")[0]}))
    lay.prepare_image_dirs(image)
    lay.set_pointer("current", image)


def boot(banks):
    """What an init's boot would choose when every candidate prepares (overlay_layout.state.walk, its writes
    made); the candidate."""
    from overlay_layout.state import walk

    chosen = walk(banks, lambda candidate, plan: {})
    assert chosen.candidate is not None, f"nothing to boot on {banks.root}"
    return chosen.candidate
