"""Container images for the tests, made with the tools people use: layer tars written here (so a test can
say exactly which whiteouts, opaque markers, hardlinks, devices and xattrs a layer holds), stacked into an
OCI image layout with umoci, converted to docker-archive and oci-archive files and pushed with skopeo."""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

CREATED = "2024-03-01T12:00:00Z"
CREATED_EPOCH = 1709294400


@dataclass
class Entry:
    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, char, block, fifo
    data: bytes = b""
    target: str = ""  # symlink or hardlink target
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int = CREATED_EPOCH - 3600
    dev: tuple[int, int] = (0, 0)
    xattrs: dict[str, str] = field(default_factory=dict)


TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
         "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}


def write_layer(path: Path, entries: list[Entry], end_blocks: bool = True) -> Path:
    """An uncompressed layer tar (PAX: xattrs as SCHILY.xattr.*)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        end = 0
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = TYPES[e.kind]
            info.mode = e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644)
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            info.linkname = e.target
            info.devmajor, info.devminor = e.dev
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            info.size = len(e.data) if e.kind == "file" else 0
            tar.addfile(info, io.BytesIO(e.data) if e.kind == "file" else None)
            end = tar.offset
    data = buf.getvalue()
    path.write_bytes(data if end_blocks else data[:end])  # umoci insert writes layers so, without end blocks
    return path


def tar_directory(root: Path, out: Path, devices: bool = True) -> Path:
    """A rootfs directory as a tarball owned by root (what Buildroot or `docker export` hand over), with
    /dev/console and /dev/null added as device nodes (a rootless build could not make them on disk)."""
    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = CREATED_EPOCH - 3600
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(root, arcname=".", filter=as_root)
        if devices:
            for name, minor in (("dev/console", (5, 1)), ("dev/null", (1, 3))):
                info = as_root(tarfile.TarInfo(name))
                info.type, info.mode = tarfile.CHRTYPE, 0o600
                info.devmajor, info.devminor = minor
                tar.addfile(info)
    return out


def run(*cmd: str) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return proc.stdout


def oci_image(layout: Path, name: str, layers: list[Path], arch: str = "arm64") -> str:
    """An OCI image layout holding `name`: the layers bottom first (umoci gzips them), for linux/`arch`,
    created at CREATED. Returns its skopeo reference, oci:LAYOUT:NAME."""
    if not layout.exists():
        run("umoci", "init", "--layout", str(layout))
    ref = f"{layout}:{name}"
    run("umoci", "new", "--image", ref)
    for layer in layers:
        run("umoci", "raw", "add-layer", "--no-history", "--image", ref, str(layer))
    run("umoci", "config", "--no-history", "--image", ref, "--os", "linux", "--architecture", arch,
        "--created", CREATED)
    return f"oci:{ref}"


def save_as(ref: str, kind: str, out: Path) -> Path:
    """The image as a docker-archive (`docker save`) or oci-archive file."""
    run("skopeo", "copy", "--quiet", ref, f"{kind}:{out}" + (":bankboot/test:1" if kind == "docker-archive" else ""))
    return out
