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
one image directory, and anything else is a LayoutError that names the path at fault. Nothing else on the
partition may be a symlink: an image directory and its files are refused when one is, and a directory the
init makes (an upper, work, backups, utils, userdata) replaces one planted in its place (nofollow.py)."""

from __future__ import annotations

import os
import stat

from overlay_layout import durable
from overlay_layout.contract import is_name
from overlay_layout.errors import BankbootError
from overlay_layout.nofollow import Ident, check_dirs, ensure_dirs

OVERLAY = "overlay"
POINTERS = ("current", "next", "previous")
# Work directories in overlay/, never images (their names start with a dot): a local stage's, removed on any
# failure and at every boot, and a URL stage's, kept so that the next attempt resumes it (stage.stage_from).
STAGING = ".staging-"
DOWNLOAD = ".download-"
DEFAULT_TRIES = 3  # trial boots a staged image gets before it is given up (`bankctl stage --tries`)
SQUASHFS = "rootfs.squashfs"
VERITY = "rootfs.verity"  # the squashfs's dm-verity hash tree (no superblock)
MANIFEST = "manifest.json"
IMAGE_DIRS = ("upper", "work", "backups", "utils")
USERDATA_DIR = "userdata"
# The key updates the device committed (keychain.py); named here so that the boot can look for it without
# importing keychain, which only a device that rotated its keys needs.
TRUST_FILE = "trust.json"
MAX_ID = 128


def is_image_id(name: str) -> bool:
    """Letters, digits and . _ + - (a letter or digit first), at most MAX_ID: the names of image directories."""
    return is_name(name, MAX_ID, alnum_first=True)


class LayoutError(BankbootError):
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
                raise LayoutError(f"{path} is not a symlink; it must point at an image directory") from e
            raise LayoutError(f"cannot read {path}: {e.strerror}") from e
        if target.startswith("/"):
            raise LayoutError(f"{path} -> {target}: pointers must be relative symlinks")
        if "/" in target.rstrip("/") or target in ("..", "."):
            raise LayoutError(f"{path} -> {target}: pointers must name an image directory inside "
                              f"{self.overlay}")
        try:
            check_id(target.rstrip("/"))
        except LayoutError as e:
            raise LayoutError(f"{path} -> {target}: {e}") from e
        return target.rstrip("/")

    def pointers_to(self, image_id: str) -> list[str]:
        """The pointers that name `image_id`, in POINTERS order. A damaged pointer names nothing here (the
        state's reading of it reports what is wrong)."""
        named = []
        for name in POINTERS:
            try:
                if self.pointer(name) == image_id:
                    named.append(name)
            except LayoutError:
                continue
        return named

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
        """What must hold before an image can be mounted: its directory is a real one, its files are regular
        files (a symlink or a FIFO planted there is refused, never opened), and the squashfs is a squashfs."""
        try:
            check_dirs(self.root, f"{OVERLAY}/{check_id(image_id)}")
        except OSError as e:
            raise LayoutError(f"image {image_id}: {e.strerror}") from e
        for path in (self.squashfs(image_id), self.verity(image_id), self.manifest_path(image_id)):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if path != self.squashfs(image_id):
                    continue  # the manifest's reader says what a missing one means
                raise LayoutError(f"image {image_id}: {path} is missing") from None
            except OSError as e:
                raise LayoutError(f"image {image_id}: cannot read {path}: {e.strerror}") from e
            if not stat.S_ISREG(st.st_mode):
                raise LayoutError(f"image {image_id}: {path} is not a regular file "
                                  f"({'a symlink' if stat.S_ISLNK(st.st_mode) else 'a special file'})")
        sq = self.squashfs(image_id)
        try:
            with open(sq, "rb") as f:
                magic = f.read(4)
        except OSError as e:
            raise LayoutError(f"image {image_id}: cannot read {sq}: {e.strerror}") from e
        if magic != b"hsqs":
            raise LayoutError(f"image {image_id}: {sq} is not a squashfs image (magic {magic!r})")

    def ensure_sub(self, image_id: str, name: str, replaced: list[str], below: str = "",
                   unsynced: list[str] | None = None) -> tuple[str, Ident]:
        """overlay/<id>/<name>[/<below>] made a real directory, without following a symlink planted in place of
        any part of it (each replaced by an empty directory and reported in `replaced`). The image directory
        itself must already be a real one: it holds the image, so it is checked, never replaced. Returns the
        path and the directory's identity (nofollow.same_dir checks it again after a mount). `unsynced`: see
        nofollow.ensure_dirs."""
        if name not in IMAGE_DIRS:
            raise ValueError(name)
        check_dirs(self.root, f"{OVERLAY}/{check_id(image_id)}")
        rel = f"{OVERLAY}/{image_id}/{name}" + (f"/{below.strip('/')}" if below.strip("/") else "")
        return os.path.join(self.root, rel), ensure_dirs(self.root, rel, replaced, unsynced=unsynced)

    def ensure_userdata_dir(self, replaced: list[str]) -> tuple[str, Ident]:
        """userdata/ (bankboot.userdata=banks) made a real directory, a symlink in its place replaced."""
        return self.userdata_dir(), ensure_dirs(self.root, USERDATA_DIR, replaced)

    def prepare_image_dirs(self, image_id: str, replaced: list[str] | None = None) -> None:
        for name in IMAGE_DIRS:
            self.ensure_sub(image_id, name, [] if replaced is None else replaced)
