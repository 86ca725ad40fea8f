"""`bankboot image`: a root filesystem directory becomes a bank file: an uncompressed tar holding
manifest.json first and rootfs.squashfs after it (so a device can read what it is about to copy before
copying it, in one pass). The squashfs is zstd, all files owned by root, timestamps fixed: the same
rootfs gives the same bytes."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from builder.arch import ARCHES
from builder.cpio import source_date_epoch
from builder.elf import ElfError, read_elf, resolve_in_root
from builder.initramfs import write_atomic
from overlay_layout.layout import MANIFEST, SQUASHFS, check_id
from overlay_layout.manifest import FORMAT, dump_manifest, parse_manifest

_ARCH_BY_MACHINE = {(a.elf_machine, a.elf_class): a.debian for a in ARCHES.values()}


class ImageError(RuntimeError):
    pass


def rootfs_arch(rootfs: Path) -> str:
    """The Debian architecture of the rootfs's /sbin/init (symlinks followed inside the rootfs)."""
    real = resolve_in_root(rootfs, "/sbin/init")
    path = rootfs / real.lstrip("/")
    if not path.is_file():
        raise ImageError(f"{rootfs} has no /sbin/init (looked at {real}): an image must have an init to boot")
    try:
        info = read_elf(path)
    except ElfError:
        raise ImageError(f"{rootfs}/sbin/init ({real}) is not an ELF program; cannot tell the image's "
                         f"architecture") from None
    try:
        return _ARCH_BY_MACHINE[(info.machine, info.elfclass)]
    except KeyError:
        raise ImageError(f"{rootfs}/sbin/init is {info.machine} ({info.elfclass}-bit), not an architecture "
                         f"bankboot knows") from None


def make_squashfs(rootfs: Path, output: Path) -> None:
    mksquashfs = shutil.which("mksquashfs")
    if mksquashfs is None:
        raise ImageError("mksquashfs is not installed (Debian squashfs-tools; make deps installs it)")
    epoch = str(source_date_epoch())
    cmd = [mksquashfs, str(rootfs), str(output), "-comp", "zstd", "-all-root", "-noappend", "-no-progress",
           "-quiet", "-mkfs-time", epoch, "-all-time", epoch, "-processors", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"mksquashfs failed: {proc.stderr.strip() or proc.stdout.strip()}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_image(rootfs: Path, version: str, output: Path, image_id: str | None = None) -> dict:
    if not rootfs.is_dir():
        raise ImageError(f"rootfs {rootfs} is not a directory")
    if not version or any(c.isspace() for c in version):
        raise ImageError(f"version {version!r} must be a non-empty word")
    arch = rootfs_arch(rootfs)
    with tempfile.TemporaryDirectory(dir=output.parent if output.parent.exists() else None) as tmp:
        sq = Path(tmp) / SQUASHFS
        make_squashfs(rootfs, sq)
        digest = sha256_file(sq)
        manifest = {
            "format": FORMAT,
            "id": check_id(image_id or f"{version}-{digest[:12]}"),
            "version": version,
            "arch": arch,
            "size": sq.stat().st_size,
            "sha256": digest,
            "created": datetime.fromtimestamp(source_date_epoch(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        data = dump_manifest(manifest)
        parse_manifest(data, "new manifest")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, size, src in ((MANIFEST, len(data), io.BytesIO(data)), (SQUASHFS, sq.stat().st_size, None)):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = size, 0o644, source_date_epoch()
                if src is None:
                    with open(sq, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info, src)
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(output, buf.getvalue())
    return manifest


def read_bank(path: Path) -> tuple[dict, tarfile.TarFile, tarfile.TarInfo]:
    """Open a bank file: (manifest, tar, the squashfs member). The caller closes the tar."""
    try:
        tar = tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError) as e:
        raise ImageError(f"{path} is not a bank file: {e}") from None
    try:
        members = tar.getmembers()
        names = [m.name for m in members]
        if names[:2] != [MANIFEST, SQUASHFS]:
            raise ImageError(f"{path}: a bank file holds {MANIFEST} then {SQUASHFS}, this one {names}")
        manifest = parse_manifest(tar.extractfile(members[0]).read(), f"{path}:{MANIFEST}")
        if members[1].size != manifest["size"]:
            raise ImageError(f"{path}: squashfs is {members[1].size} bytes, the manifest says {manifest['size']}")
        return manifest, tar, members[1]
    except BaseException:
        tar.close()
        raise


def extract_squashfs(path: Path, dest: Path) -> dict:
    """Copy the bank's squashfs to dest, checking size and sha256 against its manifest."""
    manifest, tar, member = read_bank(path)
    with tar:
        src = tar.extractfile(member)
        h = hashlib.sha256()
        with open(dest, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    if h.hexdigest() != manifest["sha256"]:
        dest.unlink()
        raise ImageError(f"{path}: squashfs sha256 {h.hexdigest()} does not match the manifest's "
                         f"{manifest['sha256']}")
    return manifest
