"""Fetch Debian packages with `apt-get download` and unpack them with `dpkg-deb -x` (no install, no root
needed for the unpacking). Everything lands in a cache directory; a finished unpack is marked with a stamp
so a second `make deps` is a no-op."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from pathlib import Path

from builder.cachelock import cache_lock
from builder.errors import BuildError
from builder.run import run

APT_TRIES = 4


class DebianError(BuildError):
    pass


def _run_apt(args: list[str], cwd: Path | None = None) -> str:
    """Run an apt command, retrying with `apt-get update` in between: mirrors hiccup ("Mirror sync in
    progress?", size mismatches) and a retry a few seconds later usually goes through."""
    last = ""
    for attempt in range(1, APT_TRIES + 1):
        try:
            return run(args, error=DebianError, cwd=cwd).stdout
        except DebianError as e:
            last = str(e)
        if attempt < APT_TRIES:
            time.sleep(2 * attempt)
            run(["apt-get", "update"], ok=tuple(range(256)))
    raise DebianError(f"{APT_TRIES} tries, the last: {last}")


def resolve_package(name: str, arch: str) -> str:
    """Turn a metapackage (linux-image-arm64) into the versioned package it depends on
    (linux-image-6.1.0-50-arm64); a plain package is returned unchanged."""
    if name.startswith("linux-image-") and not name.removeprefix("linux-image-")[:1].isdigit():
        out = _run_apt(["apt-cache", "depends", f"{name}:{arch}"])
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Depends:"):
                dep = line.split(":", 1)[1].strip().split(":")[0]
                if dep.startswith("linux-image-"):
                    return dep
        raise DebianError(f"metapackage {name}:{arch} names no linux-image package:\n{out}")
    return name


def package_version(name: str, arch: str) -> str:
    """The candidate version apt would download: part of cache keys, so a new upload is noticed."""
    out = _run_apt(["apt-cache", "policy", f"{name}:{arch}"])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                return version
    raise DebianError(f"no installable candidate for {name}:{arch} (is the architecture added and "
                      f"`apt-get update` run? `make deps` does both)")


def download(names: list[str], arch: str, dest: Path) -> list[Path]:
    """Download packages (already-present .debs are reused) and return their paths in `names` order."""
    dest.mkdir(parents=True, exist_ok=True)
    # _apt drops privileges for the download: let it write here to avoid a noisy fallback warning.
    os.chmod(dest, 0o777)
    wanted = {n: _find_deb(dest, n, arch) for n in names}
    if any(p is None for p in wanted.values()):
        with cache_lock(dest / "download"):  # apt-get writes the .deb in place: one downloader per directory
            missing = [f"{n}:{arch}" for n in names if _find_deb(dest, n, arch) is None]
            if missing:
                _run_apt(["apt-get", "download", *missing], cwd=dest)
    result = []
    for n in names:
        deb = _find_deb(dest, n, arch)
        if deb is None:
            raise DebianError(f"apt-get download did not produce a .deb for {n}:{arch} in {dest}")
        result.append(deb)
    return result


def _find_deb(dest: Path, name: str, arch: str) -> Path | None:
    debs = sorted(p for p in dest.glob(f"{name}_*_*.deb") if p.name.rsplit("_", 1)[1] in (f"{arch}.deb",
                                                                                         "all.deb"))
    return debs[-1] if debs else None


def unpack(debs: list[Path], root: Path, stamp_text: str) -> Path:
    """Unpack .debs into `root` atomically: into a sibling temp dir first, renamed into place when all went
    well, so an interrupted unpack is never mistaken for a finished one. A matching stamp skips the work."""
    stamp = root / ".bankboot-unpacked"
    if stamp.exists() and stamp.read_text() == stamp_text:
        return root
    with cache_lock(root):
        if stamp.exists() and stamp.read_text() == stamp_text:
            return root  # unpacked by another process while this one waited
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        try:
            for deb in debs:
                run(["dpkg-deb", "-x", str(deb), str(tmp)], error=DebianError)
            (tmp / ".bankboot-unpacked").write_text(stamp_text)
            if root.exists():
                shutil.rmtree(root)
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return root


def package_versions(names: list[str], arch: str) -> dict[str, str]:
    """Candidate versions of several packages in one apt-cache call (asked once per process: apt-cache reads
    the whole package cache, seconds under load, and an initramfs build asks three times)."""
    return dict(_candidates(tuple(names), arch))


@functools.cache
def _candidates(names: tuple[str, ...], arch: str) -> tuple[tuple[str, str], ...]:
    out = _run_apt(["apt-cache", "policy", *[f"{n}:{arch}" for n in names]])
    versions: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1].split(":")[0]
        elif current and line.strip().startswith("Candidate:"):
            v = line.split(":", 1)[1].strip()
            if v and v != "(none)":
                versions[current] = v
    missing = [n for n in names if n not in versions]
    if missing:
        raise DebianError(f"no installable candidate for {', '.join(missing)} ({arch}): is the architecture "
                          f"added and `apt-get update` run? `make deps` does both")
    return tuple(versions.items())
