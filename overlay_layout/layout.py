"""The banks partition's layout:

    overlay/<id>/rootfs.squashfs   the image (read-only lower layer)
    overlay/<id>/manifest.json     what the image is (see manifest.py)
    overlay/<id>/upper, work       its overlay upper and work directories
    overlay/<id>/backups           temporary storage for upgrades and resets
    overlay/<id>/utils             device-side tools for this image
    overlay/current -> <id>        the image that boots (relative symlink)
    overlay/next, overlay/previous the update lifecycle's other pointers
    userdata/                      /userdata when the board keeps it on this partition

Every name read from disk is checked: ids are a safe charset, pointers are relative symlinks that name
one image directory, and anything else is a LayoutError that names the path at fault."""

from __future__ import annotations

import os

from overlay_layout import durable
from overlay_layout.syntax import is_name

OVERLAY = "overlay"
POINTERS = ("current", "next", "previous")
SQUASHFS = "rootfs.squashfs"
VERITY = "rootfs.verity"  # the squashfs's dm-verity hash tree (no superblock)
MANIFEST = "manifest.json"
IMAGE_DIRS = ("upper", "work", "backups", "utils")
USERDATA_DIR = "userdata"
MAX_ID = 128


def is_image_id(name: str) -> bool:
    """Letters, digits and . _ + - (a letter or digit first), at most MAX_ID: the names of image directories."""
    return is_name(name, MAX_ID, alnum_first=True)


class LayoutError(RuntimeError):
    pass


def check_id(image_id: str) -> str:
    if not is_image_id(image_id) or image_id in POINTERS or ".." in image_id:
        raise LayoutError(f"invalid image id {image_id!r}: use letters, digits and . _ + - (not first), "
                          f"at most 128, not one of {', '.join(POINTERS)}")
    return image_id


class Layout:
    """The layout under `root` (the mounted banks partition)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.overlay = os.path.join(root, OVERLAY)

    def image_dir(self, image_id: str) -> str:
        return os.path.join(self.overlay, check_id(image_id))

    def squashfs(self, image_id: str) -> str:
        return os.path.join(self.image_dir(image_id), SQUASHFS)

    def verity(self, image_id: str) -> str:
        return os.path.join(self.image_dir(image_id), VERITY)

    def manifest_path(self, image_id: str) -> str:
        return os.path.join(self.image_dir(image_id), MANIFEST)

    def sub(self, image_id: str, name: str) -> str:
        if name not in IMAGE_DIRS:
            raise ValueError(name)
        return os.path.join(self.image_dir(image_id), name)

    def userdata_dir(self) -> str:
        return os.path.join(self.root, USERDATA_DIR)

    def pointer(self, name: str) -> str | None:
        """The image id a pointer symlink names, or None when it is absent."""
        if name not in POINTERS:
            raise ValueError(f"unknown pointer {name!r}")
        path = os.path.join(self.overlay, name)
        try:
            target = os.readlink(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            if os.path.lexists(path):
                raise LayoutError(f"{path} is not a symlink; it must point at an image directory") from None
            raise LayoutError(f"cannot read {path}: {e.strerror}") from None
        if target.startswith("/"):
            raise LayoutError(f"{path} -> {target}: pointers must be relative symlinks")
        if "/" in target.rstrip("/") or target in ("..", "."):
            raise LayoutError(f"{path} -> {target}: pointers must name an image directory inside "
                              f"{self.overlay}")
        try:
            check_id(target.rstrip("/"))
        except LayoutError as e:
            raise LayoutError(f"{path} -> {target}: {e}") from None
        return target.rstrip("/")

    def set_pointer(self, name: str, image_id: str | None) -> None:
        if name not in POINTERS:
            raise ValueError(f"unknown pointer {name!r}")
        path = os.path.join(self.overlay, name)
        if image_id is None:
            durable.remove(path)
        else:
            if not os.path.isdir(self.image_dir(image_id)):
                raise LayoutError(f"cannot point {name} at {image_id}: {self.image_dir(image_id)} does not exist")
            durable.set_symlink(path, check_id(image_id))

    def images(self) -> list[str]:
        if not os.path.isdir(self.overlay):
            return []
        out = []
        for name in sorted(os.listdir(self.overlay)):
            if name in POINTERS or name.startswith("."):
                continue
            path = os.path.join(self.overlay, name)
            if os.path.isdir(path) and not os.path.islink(path) and is_image_id(name):
                out.append(name)
        return out

    def check_image(self, image_id: str) -> None:
        """What must hold before an image can be mounted: its squashfs exists and is a squashfs."""
        sq = self.squashfs(image_id)
        try:
            with open(sq, "rb") as f:
                magic = f.read(4)
        except FileNotFoundError:
            raise LayoutError(f"image {image_id}: {sq} is missing") from None
        except OSError as e:
            raise LayoutError(f"image {image_id}: cannot read {sq}: {e.strerror}") from None
        if magic != b"hsqs":
            raise LayoutError(f"image {image_id}: {sq} is not a squashfs image (magic {magic!r})")

    def prepare_image_dirs(self, image_id: str) -> None:
        for name in IMAGE_DIRS:
            durable.make_dirs(self.sub(image_id, name))
