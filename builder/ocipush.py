"""`bankboot publish BANK --oci REF`: a bank pushed to a container registry as an OCI artifact, the way
ORAS and Helm ship non-image files: an image manifest whose `artifactType` says what it is, an empty
config, and one layer, the bank file itself, byte for byte (so a device reads it by range from the blob
URL with `bankctl stage`, as from any web server: overlay_layout/net/bearer.py for the registry's tokens).

skopeo pushes it (Debian's, with its credentials: `skopeo login`, the auth file, or `--token-file` for a
bearer token; registries.conf for plain-HTTP registries), from an OCI layout made in a temporary directory
whose blob is a symlink to the bank: nothing of its size is copied. The manifest holds nothing but the
bank's own facts (no push time): the same bank gives the same manifest digest, from any build host."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuildError
from builder.source import SourceError, repository, skopeo
from overlay_layout.bankfile import BankFile
from overlay_layout.hashing import hash_file
from overlay_layout.layout import LayoutError

ARTIFACT_TYPE = "application/vnd.bankboot.bank.v1"
LAYER_TYPE = "application/vnd.bankboot.bank.v1"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # of b"{}"
EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2}
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
# Docker Hub's short names, as docker and skopeo read them: docker.io/NAME is docker.io/library/NAME, served
# by registry-1.docker.io.
HUB, HUB_API = "docker.io", "registry-1.docker.io"


class OciPushError(BuildError, ValueError):
    pass


@dataclass(frozen=True)
class Published:
    ref: str  # HOST/REPO:TAG as pushed
    pinned: str  # HOST/REPO@sha256:... (the manifest)
    blob_url: str  # what `bankctl stage` reads
    image_id: str
    version: str


def split_target(ref: str) -> tuple[str, str, str]:
    """(host, repository path, tag) of docker://HOST/REPO[:TAG]; a tag-less one is tagged by the caller."""
    name = ref.removeprefix("docker://")
    if "@" in name:
        raise OciPushError(f"--oci {ref}: a digest names content already pushed; give a tag (HOST/REPO:TAG) or none "
                           f"(the bank's version becomes the tag)")
    repo = repository(name)
    tag = name[len(repo) + 1:] if len(name) > len(repo) else ""
    host, slash, path = repo.partition("/")
    if not slash or not path or not ("." in host or ":" in host or host == "localhost"):
        raise OciPushError(f"--oci {ref}: name the registry, as HOST[:PORT]/REPOSITORY[:TAG] (e.g. "
                           f"registry.example.com/banks/board:1.2.0); Docker Hub is docker.io/USER/REPO")
    if path != path.lower() or not all(part and part[0].isalnum() for part in path.split("/")):
        raise OciPushError(f"--oci {ref}: repository {path!r} must be lower case, its parts starting with a letter "
                           f"or digit (the distribution spec's names)")
    if host == HUB and "/" not in path:
        path = f"library/{path}"
    return host, path, tag


def tag_of(version: str) -> str:
    """A bank version as a tag: tags allow [A-Za-z0-9_.-], so semver's build `+` becomes `_` (as Helm does)."""
    return version.replace("+", "_")


def blob_url(host: str, path: str, digest: str, plain_http: bool) -> str:
    api = HUB_API if host == HUB else host
    return f"{'http' if plain_http else 'https'}://{api}/v2/{path}/blobs/{digest}"


def artifact_manifest(bank_digest: str, size: int, image_id: str, version: str, arch: str) -> bytes:
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
        "config": {**EMPTY, "data": "e30="},
        "layers": [{"mediaType": LAYER_TYPE, "digest": bank_digest, "size": size,
                    "annotations": {"org.opencontainers.image.title": f"{image_id}.bank"}}],
        "annotations": {"org.opencontainers.image.version": version, "dev.bankboot.image.id": image_id,
                        "dev.bankboot.image.arch": arch},
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def write_layout(dest: Path, bank: Path, bank_digest: str, manifest: bytes) -> None:
    """An OCI image layout holding the artifact; its bank blob is a symlink to `bank`."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    os.symlink(bank.resolve(), blobs / bank_digest.removeprefix("sha256:"))
    (blobs / EMPTY_DIGEST.removeprefix("sha256:")).write_bytes(b"{}")
    manifest_hex = hash_bytes(manifest)
    (blobs / manifest_hex).write_bytes(manifest)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
                            "digest": f"sha256:{manifest_hex}", "size": len(manifest)}]}
    (dest / "index.json").write_text(json.dumps(index))


def hash_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def publish_oci(bank: Path, ref: str, token_file: Path | None = None, plain_http: bool = False) -> Published:
    """Push `bank` to the registry at `ref` (see the module's docstring)."""
    host, path, tag = split_target(ref)
    try:
        with BankFile(str(bank)) as b:
            m = b.manifest
    except (LayoutError, OSError) as e:
        raise OciPushError(f"{bank}: not a bank file bankboot can publish ({e})") from None
    tag = tag or tag_of(m["version"])
    token: list[str] = []
    if token_file is not None:
        from overlay_layout.net.bearer import TokenError, read_token

        try:
            token = ["--dest-registry-token", read_token(str(token_file))]
        except TokenError as e:
            raise OciPushError(str(e)) from None
    size, digest = bank.stat().st_size, f"sha256:{hash_file(str(bank))[1]}"
    manifest = artifact_manifest(digest, size, m["id"], m["version"], m["arch"])
    target = f"{host}/{path}:{tag}"
    with tempfile.TemporaryDirectory(prefix="bankboot-publish-") as tmp:
        write_layout(Path(tmp) / "layout", bank, digest, manifest)
        tls = ["--dest-tls-verify=false"] if plain_http else []
        try:
            skopeo(["copy", "--quiet", "--preserve-digests", *tls, *token, f"oci:{tmp}/layout",
                    f"docker://{target}"], f"pushing {bank} to {target}")
        except SourceError as e:
            raise OciPushError(str(e)) from None
    pinned = f"{host}/{path}@sha256:{hash_bytes(manifest)}"
    return Published(target, pinned, blob_url(host, path, digest, plain_http), m["id"], m["version"])
