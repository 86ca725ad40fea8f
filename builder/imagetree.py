"""The two ways a bank's squashfs is made, and what each leaves to check the image with:

- a root filesystem directory: checked as it is, then packed by mksquashfs (owned by root, one timestamp:
  a directory's owners and times are this machine's, not the image's);
- an image's layers or a tarball (builder/source.py): flattened and streamed into tar2sqfs, never unpacked
  (owners, modes, devices, xattrs as the source has them; timestamps clamped), and checked through its
  skeleton (builder/skeleton.py) once the squashfs exists.

Either way the image's own kernel (--kernel FILE or --kernel image) is found and checked the same way
(builder/imagekernel.py) and put at /boot/bankboot in the squashfs."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.board import Board
from builder.cpio import source_date_epoch
from builder.errors import ImageError
from builder.layerread import LayerError
from builder.source import Source

IMAGE_KERNEL = "image"
KEPT_FOR_KERNELS = ("usr/lib/modules/", "lib/modules/", "usr/lib/bootc/kargs.d/")


@dataclass(frozen=True)
class KernelRequest:
    """--kernel FILE or --kernel image, and how its initramfs is made."""

    kernel: Path | str | None = None
    initramfs: Path | None = None
    board: str | Board | None = None
    append: str = ""
    sign_key: Path | None = None
    trust: tuple[Path, ...] = ()

    @property
    def from_image(self) -> bool:
        return self.kernel == IMAGE_KERNEL


@dataclass(frozen=True)
class Tree:
    root: Path  # a directory to check the image through: the rootfs, or the skeleton
    arch: str
    created: int  # the manifest's creation time
    kernel: dict | None  # the manifest's `kernel`
    fetch: Callable[[str], None] | None  # gives a skeleton's file its bytes before it is read


def explicit_epoch() -> int | None:
    """SOURCE_DATE_EPOCH, when the user set it."""
    return source_date_epoch() if os.environ.get("SOURCE_DATE_EPOCH") else None


def own_kernel(root: Path, arch: str, k: KernelRequest, tmp: Path) -> tuple[dict | None, dict[str, Path]]:
    """The manifest's `kernel` and the files to add to the squashfs (none without --kernel)."""
    from builder.imagekernel import image_kargs, image_kernel, prepare_kernel

    if k.kernel is None:
        return None, {}
    release, append = None, k.append
    if k.from_image:
        release, path = image_kernel(root)
        append = " ".join([*image_kargs(root, arch), k.append]).strip()
    else:
        path = Path(k.kernel)
    return prepare_kernel(root, arch, path, k.initramfs, k.board, k.sign_key, k.trust, append, tmp, release)


def tree_from_dir(rootfs: Path, squashfs: Path, arch: str | None, k: KernelRequest, tmp: Path) -> Tree:
    from builder.image import make_squashfs, rootfs_arch

    arch = arch or rootfs_arch(rootfs)
    kobj, extra = own_kernel(rootfs, arch, k, tmp)
    make_squashfs(rootfs, squashfs, extra)
    return Tree(rootfs, arch, source_date_epoch(), kobj, None)


def tree_from_layers(src: Source, squashfs: Path, arch: str | None, k: KernelRequest, tmp: Path,
                     say: Callable[[str], None]) -> Tree:
    from builder.image import rootfs_arch
    from builder.kernelfile import KernelFileError, read_kernel
    from builder.pack import pack_layers
    from builder.skeleton import Skeleton
    from builder.squashfs import Squashfs, SquashfsError

    clamp = explicit_epoch()
    if clamp is None:
        clamp = src.created
    keep = (lambda p: p.startswith(KEPT_FOR_KERNELS)) if k.kernel is not None else None
    skel = Skeleton(tmp / "tree", keep)
    kernel: dict = {}

    def extras() -> list[tuple[tarfile.TarInfo, Path | None]]:
        """The image's own kernel, once the layers are written (its modules are in the skeleton by then)."""
        from builder.imagekernel import image_kernel

        skel.close()
        karch = arch or src.arch
        if karch is None:  # a tarball without --arch: the kernel says (the init is checked against it later)
            path = image_kernel(skel.root)[1] if k.from_image else Path(str(k.kernel))
            try:
                karch = read_kernel(path).arch
            except KernelFileError as e:
                raise ImageError(str(e)) from None
        kobj, extra = own_kernel(skel.root, karch, k, tmp)
        kernel.update(kobj or {}, arch=karch)
        return _extra_entries(extra, clamp or 0)

    try:
        stats = pack_layers(list(src.layers), squashfs, clamp, skel.visit, extras if k.kernel is not None else None)
    except LayerError as e:
        raise ImageError(str(e)) from None
    finally:
        skel.close()
    for name, paths in sorted(stats.dropped.items()):
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        say(f"warning: {shown}: extended attribute {name} dropped (squashfs stores only user.*, trusted.* and "
            f"security.* attributes; ACLs cannot be kept)")
    try:
        skel.read_squashfs = Squashfs(str(squashfs)).read_file
    except SquashfsError as e:
        raise ImageError(f"tar2sqfs wrote a squashfs bankboot cannot read: {e}") from None
    found = rootfs_arch(skel.root, fill=skel.fill)
    claimed = arch or src.arch or kernel.get("arch")
    if claimed is not None and claimed != found and arch is None:
        said = "its config" if src.arch else "its kernel"
        raise ImageError(f"{src.name}: {said} says {claimed}, but its /sbin/init is {found}")
    kernel.pop("arch", None)
    return Tree(skel.root, arch or claimed or found, clamp if clamp is not None else stats.newest, kernel or None,
                skel.fill)


def _extra_entries(extra: dict[str, Path], mtime: int) -> list[tuple[tarfile.TarInfo, Path | None]]:
    """Tar entries for files bankboot adds at absolute paths (their directories first), owned by root."""
    out: list[tuple[tarfile.TarInfo, Path | None]] = []
    dirs = sorted({str(p) for path in extra for p in Path(path).parents if str(p) != "/"})
    for d in dirs:
        info = tarfile.TarInfo(d.lstrip("/"))
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
        out.append((info, None))
    for path, src in sorted(extra.items()):
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode, info.mtime = src.stat().st_size, 0o644, mtime
        out.append((info, src))
    return out
