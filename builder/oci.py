"""Container images as bankboot reads them: an image manifest (OCI, or Docker's schema 2, which has the
same shape), its config (architecture, creation time, the layers' uncompressed digests) and its layers,
bottom first. Two stores hold them here: an OCI image layout directory (`oci-layout`, `index.json`,
`blobs/<algorithm>/<hex>`), read in place, and the `dir:` directory skopeo writes (`manifest.json`, blobs
named by their hex digest) for everything it fetched or converted. Every blob's digest is checked: small
ones (index, manifest, config) on reading, layers as they stream (builder/layerread.py).

Fetching from registries, docker-archive files and the like is skopeo's work (builder/source.py), not
ours: no registry protocol is spoken here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from builder.arch import ARCHES
from builder.errors import BuildError
from builder.layerread import Layer

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
# Layer media types and the compression each names (the stream's first bytes are checked too).
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "auto",  # skopeo stores docker-archive layers plain
    "application/vnd.docker.image.rootfs.diff.tar": "none",
}
REF_NAME = "org.opencontainers.image.ref.name"


class OciError(BuildError, ValueError):
    pass


@dataclass(frozen=True)
class ImageRef:
    """What an image is, once found: its layers and the facts bankboot takes from its config."""

    name: str  # as the user gave it, for messages
    manifest_digest: str
    arch: str  # Debian architecture
    created: int | None  # the config's creation time (seconds since the epoch)
    layers: tuple[Layer, ...]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def oci_arch(platform: dict, where: str) -> str:
    """The Debian architecture of an OCI platform (or config), which must be linux."""
    os_name, arch, variant = platform.get("os", ""), platform.get("architecture", ""), platform.get("variant", "")
    if os_name != "linux":
        raise OciError(f"{where} is an image for {os_name or 'no operating system'}, not linux")
    for a in ARCHES.values():
        want_arch, want_variant = a.oci_platform
        if arch == want_arch and (not want_variant or variant in (want_variant, "")):
            return a.debian
    known = ", ".join(f"{a.oci_platform[0]}{'/' + a.oci_platform[1] if a.oci_platform[1] else ''}"
                      for a in ARCHES.values())
    raise OciError(f"{where} is an image for {arch}{'/' + variant if variant else ''}; bankboot builds for {known}")


def parse_created(text: object) -> int | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


class BlobStore:
    """Blobs by digest in one of the two directory formats."""

    def __init__(self, root: Path, layout: bool, name: str) -> None:
        self.root, self.layout, self.name = root, layout, name

    def path(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
            raise OciError(f"{self.name}: digest {digest!r} is not a sha256 digest")
        return self.root / "blobs" / algo / hexpart if self.layout else self.root / hexpart

    def read_json(self, digest: str, what: str) -> tuple[dict, bytes]:
        path = self.path(digest)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise OciError(f"{self.name}: its {what} {digest[:19]}… is missing ({e.strerror})") from None
        if f"sha256:{sha256_hex(raw)}" != digest:
            raise OciError(f"{self.name}: its {what} {digest[:19]}… does not match its digest: the image is damaged")
        return _json(raw, f"{self.name}: its {what}"), raw


def _json(raw: bytes, where: str) -> dict:
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise OciError(f"{where} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise OciError(f"{where} is not a JSON object")
    return data


def choose_platform(index: dict, arch: str | None, where: str) -> dict:
    """The descriptor for `arch` in an image index (the only linux one when arch is None)."""
    entries = [m for m in index.get("manifests", []) if isinstance(m, dict)]
    found: dict[str, dict] = {}
    for m in entries:
        platform = m.get("platform") or {}
        try:
            found.setdefault(oci_arch(platform, where), m)
        except OciError:
            continue  # another OS or architecture, or an attestation (platform unknown/unknown)
    if arch is not None:
        if arch not in found:
            have = ", ".join(sorted(found)) or "none bankboot builds for"
            raise OciError(f"{where} has no image for {arch} (it has: {have})")
        return found[arch]
    if len(found) != 1:
        raise OciError(f"{where} holds images for {', '.join(sorted(found)) or 'no architecture bankboot knows'}: "
                       f"give --arch")
    return next(iter(found.values()))


def image_from_manifest(store: BlobStore, manifest: dict, digest: str, arch: str | None) -> ImageRef:
    """The layers and config facts of one image manifest, checked against `arch` when given."""
    where = store.name
    if manifest.get("mediaType", MANIFEST_TYPES[0]) not in MANIFEST_TYPES or manifest.get("schemaVersion") != 2:
        raise OciError(f"{where}: not an image manifest bankboot reads (media type {manifest.get('mediaType')!r}, "
                       f"schema {manifest.get('schemaVersion')!r})")
    config_desc = manifest.get("config") or {}
    config, _ = store.read_json(str(config_desc.get("digest", "")), "config")
    image_arch = oci_arch(config, where)
    if arch is not None and image_arch != arch:
        raise OciError(f"{where} is an image for {image_arch}, not {arch} (--arch)")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    descs = manifest.get("layers") or []
    if not descs:
        raise OciError(f"{where}: the image has no layers")
    if len(diff_ids) != len(descs):
        raise OciError(f"{where}: its config lists {len(diff_ids)} layers, its manifest {len(descs)}")
    layers = []
    for n, (desc, diff_id) in enumerate(zip(descs, diff_ids, strict=True), 1):
        media = desc.get("mediaType", "")
        if media not in LAYER_TYPES:
            raise OciError(f"{where}: layer {n} is of type {media!r}, which bankboot does not read (a foreign "
                           f"or non-distributable layer is not stored in the image)")
        layer_digest = str(desc.get("digest", ""))
        layers.append(Layer(store.path(layer_digest), f"layer {n} of {len(descs)} ({layer_digest[:19]}…) of {where}",
                            LAYER_TYPES[media], layer_digest, str(diff_id)))
    return ImageRef(where, digest, image_arch, parse_created(config.get("created")), tuple(layers))


def read_layout(root: Path, ref: str | None, arch: str | None, name: str) -> ImageRef:
    """An image in an OCI image layout directory, by its ref name (the only image when there is one)."""
    if not (root / "oci-layout").is_file() or not (root / "index.json").is_file():
        raise OciError(f"{name}: {root} is not an OCI image layout (no oci-layout and index.json)")
    store = BlobStore(root, True, name)
    index = _json((root / "index.json").read_bytes(), f"{name}: index.json")
    entries = [m for m in index.get("manifests", []) if isinstance(m, dict)]
    if ref is not None:
        entries = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) == ref]
        if not entries:
            names = sorted({str((m.get("annotations") or {}).get(REF_NAME)) for m in index.get("manifests", [])
                            if isinstance(m, dict)})
            raise OciError(f"{name}: no image named {ref!r} in {root} (it has: {', '.join(names) or 'none'})")
    if len(entries) == 1:
        desc = entries[0]
    elif entries and all(m.get("platform") for m in entries):  # one name (or none) for several platforms
        desc = choose_platform({"manifests": entries}, arch, name)
    else:
        raise OciError(f"{name}: {root} holds {len(entries)} images: name one as oci:{root}:NAME")
    return _resolve(store, desc, arch)


def _resolve(store: BlobStore, desc: dict, arch: str | None) -> ImageRef:
    for _ in range(4):  # an index may point at an index; a few levels at most
        digest = str(desc.get("digest", ""))
        data, _ = store.read_json(digest, "manifest")
        if data.get("mediaType") in INDEX_TYPES or "manifests" in data:
            desc = choose_platform(data, arch, store.name)
            continue
        return image_from_manifest(store, data, digest, arch)
    raise OciError(f"{store.name}: image indexes nest too deep")


def read_dir(root: Path, arch: str | None, name: str, digest: str | None = None) -> ImageRef:
    """The image skopeo wrote with `skopeo copy SRC dir:ROOT` (one image manifest, blobs by hex digest)."""
    store = BlobStore(root, False, name)
    try:
        raw = (root / "manifest.json").read_bytes()
    except OSError as e:
        raise OciError(f"{name}: skopeo wrote no manifest ({e.strerror})") from None
    manifest = _json(raw, f"{name}: its manifest")
    return image_from_manifest(store, manifest, digest or f"sha256:{sha256_hex(raw)}", arch)
