"""Writing a bank's parts without holding them in memory: the squashfs of an image's layers (the flattened
tar stream piped into squashfs-tools-ng's tar2sqfs), the chunk index of a squashfs read in windows, and the
bank file itself streamed from its member files into place."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from builder.errors import ImageError
from builder.layerread import Layer
from builder.layers import FlattenStats, Visitor, flatten
from builder.run import find_tool
from overlay_layout import chunks, durable
from overlay_layout.layout import MANIFEST

Extras = Callable[[], list[tuple[tarfile.TarInfo, Path | None]]]


def pack_layers(layers: list[Layer], output: Path, clamp: int | None, visit: Visitor | None = None,
                extras: Extras | None = None) -> FlattenStats:
    """The squashfs of the layers' merged tree: zstd, ownership, modes, xattrs, devices and hardlinks as the
    layers have them; directories the layers imply but do not list are root's, 0755, at `clamp` (or 0)."""
    tar2sqfs = find_tool("tar2sqfs", "squashfs-tools-ng", ImageError)
    cmd = [tar2sqfs, "--quiet", "--no-skip", "--compressor", "zstd", "--num-jobs", str(os.cpu_count() or 1),
           "--defaults", f"uid=0,gid=0,mode=0755,mtime={clamp or 0}", "--force", str(output)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        assert proc.stdin is not None
        try:
            stats = flatten(layers, proc.stdin, clamp, visit, extras)
            proc.stdin.close()
        except OSError as e:  # tar2sqfs stopped reading (it says why), or a write failed
            proc.stdin.close()
            if proc.wait() == 0:
                raise ImageError(f"writing the squashfs failed: {e}") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            err.seek(0)
            said = err.read().decode(errors="replace").strip()
            raise ImageError(f"tar2sqfs failed (exit {proc.returncode}) packing the image" +
                             (f":\n{said[-2000:]}" if said else ""))
    return stats


def index_file(path: Path) -> bytes:
    """The chunk index (overlay_layout/chunks.py) of a file, read in windows."""
    with open(path, "rb") as f:
        return chunks.dump(chunks.index_of_stream(f.read))


def write_bank(output: Path, manifest: bytes, members: list[Path], mtime: int) -> None:
    """The bank file: an uncompressed tar of manifest.json then the members, written beside `output`, synced
    and renamed over it, so a failure leaves no partial bank (and an old one in place)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")

    def fill(fd: int) -> None:
        with os.fdopen(os.dup(fd), "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(manifest), 0o644, mtime
            tar.addfile(info, io.BytesIO(manifest))
            for path in members:
                info = tarfile.TarInfo(path.name)
                info.size, info.mode, info.mtime = path.stat().st_size, 0o644, mtime
                with open(path, "rb") as src:
                    tar.addfile(info, src)

    durable.fill_file(str(tmp), fill)
    durable.rename(str(tmp), str(output))
