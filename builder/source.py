"""`bankboot image --from SOURCE`: what SOURCE names, turned into the layers (or the directory) a bank is
built from.

    DIR, dir:DIR                   a root filesystem directory (as --rootfs)
    DIR with oci-layout, oci:DIR[:NAME]  an OCI image layout (skopeo copy ... oci:, umoci, buildah push)
    FILE.tar, docker-archive:FILE  `docker save` / `podman save` output
    oci-archive:FILE               a tar of an OCI image layout (podman save --format oci-archive)
    docker://HOST/REPO[:TAG|@DIGEST]  an image in a registry (pulled by digest; the digest is printed)
    FILE.tar[.gz|.zst|.xz|.bz2], tar:FILE  a root filesystem tarball (docker export, Buildroot, Yocto, debos,
                                   mmdebstrap)

skopeo (Debian's) does the fetching and converting: registries (with the credentials and registries.conf
it reads, as podman and buildah do), docker-archive and oci-archive files; its `dir:` output and OCI
layouts are read in place (builder/oci.py)."""

from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuildError
from builder.layerread import Layer, LayerError, detect_compression
from builder.layers import normalize
from builder.oci import INDEX_TYPES, OciError, choose_platform, read_dir, read_layout, sha256_hex
from builder.run import CommandError, run

KINDS = ("dir", "oci", "docker-archive", "oci-archive", "registry", "tarball")
PREFIXES = {"dir:": "dir", "oci:": "oci", "docker-archive:": "docker-archive", "oci-archive:": "oci-archive",
            "tar:": "tarball"}
_HEX64 = re.compile(r"[0-9a-f]{64}(\.[a-z]+)?")  # docker save: <id>/, <id>.json, <id>.tar
# skopeo's last words, and what to do about them.
_HINTS = (("unauthorized", "the registry wants credentials: log in with `skopeo login HOST` (or docker login), "
                           "or check the image name"),
          ("authentication required", "the registry wants credentials: log in with `skopeo login HOST`"),
          ("manifest unknown", "no such tag or digest in that repository"),
          ("name unknown", "no such repository in that registry"),
          ("not found", "no such image"),
          ("server gave HTTP response to HTTPS client",
           "the registry speaks plain HTTP: mark it `insecure = true` in registries.conf "
           "(containers-registries.conf(5))"),
          ("connection refused", "nothing answers at that address"))


class SourceError(BuildError, ValueError):
    pass


@dataclass(frozen=True)
class Source:
    kind: str  # one of KINDS
    name: str  # as given
    rootfs: Path | None = None  # kind "dir"
    layers: tuple[Layer, ...] = ()
    arch: str | None = None  # from the image's config (a tarball has none)
    created: int | None = None  # the image's creation time
    digest: str | None = None  # the image manifest's digest
    pin: str | None = None  # a registry image by digest: docker://HOST/REPO@sha256:...


def classify(spec: str) -> tuple[str, str]:
    """(kind, the rest of SOURCE after its transport prefix)."""
    if spec.startswith("docker://"):
        return "registry", spec.removeprefix("docker://")
    for prefix, kind in PREFIXES.items():
        if spec.startswith(prefix):
            return kind, spec.removeprefix(prefix)
    path = Path(spec)
    if path.is_dir():
        return ("oci" if (path / "oci-layout").is_file() else "dir"), spec
    if path.is_file():
        return sniff_tar(path), spec
    raise SourceError(f"--from {spec}: no such file or directory (an image source is a directory, a tarball, an "
                      f"OCI layout, a docker-archive, or docker://REGISTRY/REPO:TAG)")


def sniff_tar(path: Path) -> str:
    """A tar file holds an image archive (docker-archive, oci-archive) or a root filesystem."""
    if detect_compression(path) != "none":
        return "tarball"
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            if first is None:
                raise SourceError(f"--from {path}: an empty tar archive")
            top = normalize(first.name, str(path)).split("/")[0]
            if top not in ("blobs", "manifest.json", "repositories", "index.json", "oci-layout") and \
                    not _HEX64.fullmatch(top):
                return "tarball"
            names = {normalize(m.name, str(path)).split("/")[0] for m in tar}
    except (tarfile.TarError, OSError, LayerError) as e:
        raise SourceError(f"--from {path}: not a tar archive ({e})") from None
    if "manifest.json" in names:
        return "docker-archive"
    return "oci-archive" if "oci-layout" in names else "tarball"


def split_ref(rest: str) -> tuple[Path, str | None]:
    """PATH[:NAME]: a path that exists as given has no NAME (paths may hold colons)."""
    if Path(rest).exists() or ":" not in rest:
        return Path(rest), None
    head, _, name = rest.rpartition(":")
    return Path(head), name or None


def repository(ref: str) -> str:
    """HOST/REPO of HOST/REPO:TAG or HOST/REPO@DIGEST (a port's colon is not a tag's)."""
    ref = ref.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref[:colon] if colon > slash else ref


def skopeo(args: list[str], what: str, text: bool = True) -> str | bytes:
    """Run skopeo; its error becomes one line saying what went wrong and, where known, what to do. The
    registries.conf named by $CONTAINERS_REGISTRIES_CONF applies (as in podman; Debian 12's skopeo takes it
    only as an option)."""
    conf = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    opts = ["--registries-conf", conf] if conf else []
    try:
        return run(["skopeo", *opts, *args], error=CommandError, package="skopeo", what=what, text=text).stdout
    except CommandError as e:
        said = str(e)
        msgs = re.findall(r'msg="((?:[^"\\]|\\.)*)"', said)
        detail = msgs[-1].replace('\\"', '"') if msgs else said.split("\n", 1)[-1].strip()
        hint = next((h for needle, h in _HINTS if needle in said.lower() or needle in said), None)
        raise SourceError(f"{what}: {detail}" + (f" ({hint})" if hint else "")) from None


def open_source(spec: str, arch: str | None, work: Path) -> Source:
    """What SOURCE holds; `work` (an empty directory on the output's filesystem) receives what skopeo fetches.
    `arch`: the Debian architecture wanted (an index picks it; an image of another one is refused)."""
    kind, rest = classify(spec)
    work.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "dir":
            if not Path(rest).is_dir():
                raise SourceError(f"--from {spec}: {rest} is not a directory")
            return Source(kind, spec, rootfs=Path(rest))
        if kind == "tarball":
            path = Path(rest)
            if not path.is_file():
                raise SourceError(f"--from {spec}: {rest} does not exist")
            return Source(kind, spec, layers=(Layer(path, str(path), "auto", whiteouts=False),))
        if kind == "oci":
            path, name = split_ref(rest)
            image = read_layout(path, name, arch, spec)
            return Source(kind, spec, layers=image.layers, arch=image.arch, created=image.created,
                          digest=image.manifest_digest)
        if kind in ("docker-archive", "oci-archive"):
            path, _ = split_ref(rest)
            if not path.is_file():
                raise SourceError(f"--from {spec}: {path} does not exist")
            dest = work / "image"
            skopeo(["copy", "--quiet", *_platform_args(arch), f"{kind}:{rest}", f"dir:{dest}"], f"reading {spec}")
            image = read_dir(dest, arch, spec)
            return Source(kind, spec, layers=image.layers, arch=image.arch, created=image.created,
                          digest=image.manifest_digest)
        return _pull(spec, rest, arch, work)
    except (OciError, LayerError) as e:
        raise SourceError(str(e)) from None


def _platform_args(arch: str | None) -> list[str]:
    from builder.arch import ARCHES

    if arch is None:
        return []
    oci_arch, variant = ARCHES[arch].oci_platform
    return ["--override-os", "linux", "--override-arch", oci_arch,
            *(["--override-variant", variant] if variant else [])]


def _pull(spec: str, ref: str, arch: str | None, work: Path) -> Source:
    """A registry image: its manifest (or index) read first, so the layers fetched are those of one digest."""
    raw = skopeo(["inspect", "--raw", f"docker://{ref}"], f"reading {spec}", text=False)
    assert isinstance(raw, bytes)
    try:
        top = json.loads(raw)
    except ValueError:
        raise SourceError(f"{spec}: the registry answered with something that is not a manifest") from None
    digest = f"sha256:{sha256_hex(raw)}"
    if isinstance(top, dict) and (top.get("mediaType") in INDEX_TYPES or "manifests" in top):
        digest = str(choose_platform(top, arch, spec).get("digest", ""))
    pinned = f"{repository(ref)}@{digest}"
    dest = work / "image"
    skopeo(["copy", "--quiet", f"docker://{pinned}", f"dir:{dest}"], f"fetching {spec} ({digest[:19]}…)")
    image = read_dir(dest, arch, spec, digest)
    return Source("registry", spec, layers=image.layers, arch=image.arch, created=image.created, digest=digest,
                  pin=f"docker://{pinned}")
