"""Staging an update: copy a bank file's squashfs onto the banks partition in one pass (hashing while
copying), check it against its manifest and this machine, and only then make it `next` on trial.
Anything that fails leaves nothing behind but what was there before."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from overlay_layout import durable, hashing
from overlay_layout.bankfile import BankFile
from overlay_layout.contract import UnknownArch, arch_of_machine
from overlay_layout.layout import MANIFEST, SQUASHFS, LayoutError
from overlay_layout.manifest import dump_manifest
from overlay_layout.state import Banks, StateError
from overlay_layout.trust import Policy, TrustError, version_lt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.records import Manifest

MARGIN = 4 << 20  # left free on the partition after staging, for state.json and the boot log
DEFAULT_RESERVE = 0  # extra room to leave free beyond MARGIN (the bankctl kit no longer lives on the partition)


class StageError(RuntimeError):
    pass


def tree_size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def copy_upper(src: str, dst: str) -> None:
    """Copy an overlay upper dir as overlayfs wrote it: whiteouts (0:0 char devices), opaque-dir and other
    xattrs, symlinks, owners and modes."""
    os.makedirs(dst, exist_ok=True)
    _copy_meta(src, dst)
    for entry in os.scandir(src):
        s, d = entry.path, os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            copy_upper(s, d)
            continue
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISREG(st.st_mode):
            with open(s, "rb") as fi, open(d, "wb") as fo:
                while chunk := fi.read(hashing.BLOCK):
                    fo.write(chunk)
                fo.flush()
                os.fsync(fo.fileno())
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            os.mknod(d, st.st_mode, st.st_rdev)
        else:
            continue  # sockets: nothing to keep
        _copy_meta(s, d)


def _copy_meta(src: str, dst: str) -> None:
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    try:
        for name in os.listxattr(src, follow_symlinks=False):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
    except OSError:
        pass
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def stage(banks: Banks, bank_file: str, policy: Policy, running_version: str, tries: int = 3, upper: str = "copy",
          machine: str | None = None, progress: Callable[[int, int], None] | None = None,
          allow_downgrade: bool = False, reserve: int = DEFAULT_RESERVE, booted: str | None = None) -> Manifest:
    """`reserve`: bytes staging must leave free beyond MARGIN, so the trial's first boot has room for
    its bankctl kit (the caller passes the running kit's size). `booted`: the running image, never
    replaced. The caller holds the banks lock (lock.py)."""
    if upper not in ("copy", "fresh"):
        raise StageError(f"--upper must be copy or fresh, not {upper!r}")
    if tries < 1:
        raise StageError(f"--tries must be at least 1, not {tries}")
    layout = banks.layout
    banks.refuse_if_rollback_pending()
    # What a stage cut by a power loss left behind: it only takes space, and a retry must find room.
    banks.remove_staging_leftovers()
    try:
        bank = BankFile(bank_file)
    except LayoutError as e:
        raise StageError(str(e)) from None
    with bank:
        manifest = bank.manifest
        image = manifest["id"]
        try:
            who = policy.check(manifest, running_version)
            floor = banks.floors(banks.load())[0]
            downgrade = bool(floor and version_lt(manifest["version"], floor))
            if downgrade:
                if not allow_downgrade:
                    raise TrustError(f"version {manifest['version']} is below this device's floor {floor} "
                                     f"(anti-rollback); --allow-downgrade to override where the initramfs allows it")
                if not policy.allow_downgrade:
                    raise TrustError(f"version {manifest['version']} is below the floor {floor} and this "
                                     f"initramfs does not allow downgrades")
        except TrustError as e:
            raise StageError(str(e)) from None
        manifest["_signed_by"] = who
        try:
            arch = arch_of_machine(machine or os.uname().machine).debian
        except UnknownArch as e:
            raise StageError(str(e)) from None
        if manifest["arch"] != arch:
            raise StageError(f"{bank_file} is an {manifest['arch']} image; this machine is {arch}")
        if os.path.exists(layout.image_dir(image)):
            pointed = [p for p in ("current", "next", "previous") if banks._pointer(p) == image]
            if pointed or image == booted:
                raise StageError(f"image {image} is already on the banks partition "
                                 f"({', '.join(pointed) or 'running'})")
            # Complete on disk but never made `next` (a cut after its rename): replace it.
            durable.remove_tree(layout.image_dir(image))
            durable.fsync_dir(layout.overlay)
        cur = layout.pointer("current")
        copies = _upper_copies(layout.sub(cur, "upper"), manifest.get("persist")) if cur and upper == "copy" else []
        verity = manifest.get("verity")
        need = manifest["size"] + (verity["size"] if verity else 0) + MARGIN + reserve
        need += sum(tree_size(src) for src, _ in copies)
        fs = os.statvfs(layout.root)
        free = fs.f_bavail * fs.f_frsize
        if free < need:
            raise StageError(f"not enough space on the banks partition: {need / 1e6:.1f} MB needed "
                             f"(including {(MARGIN + reserve) / 1e6:.1f} MB kept free for the next boot), "
                             f"{free / 1e6:.1f} MB free (bankctl gc removes unused images)")
        tmp = os.path.join(layout.overlay, f".staging-{image}")
        durable.make_dirs(layout.overlay)
        durable.remove_tree(tmp)
        os.mkdir(tmp)
        try:
            for member in bank.payload():
                try:
                    bank.extract(member, os.path.join(tmp, member.name), progress if member.name == SQUASHFS else None)
                except LayoutError as e:
                    raise StageError(str(e)) from None
            durable.write_file(os.path.join(tmp, MANIFEST),
                               dump_manifest({k: v for k, v in manifest.items() if not k.startswith("_")}))
            for name in ("work", "backups", "utils"):
                os.mkdir(os.path.join(tmp, name))
            os.mkdir(os.path.join(tmp, "upper"))
            for src, rel in copies:
                dst = os.path.join(tmp, "upper", rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                copy_upper(src, dst)
            for dirpath, _, _ in os.walk(tmp):
                durable.fsync_dir(dirpath)
            durable.rename(tmp, layout.image_dir(image))
        except BaseException:
            durable.remove_tree(tmp)
            raise
    try:
        if downgrade:  # allowed by the initramfs and asked for: the trial must be able to boot
            banks.lower_boot_floor(banks.load(), manifest["version"])
        banks.add_trial(image, tries)
    except StateError:
        durable.remove_tree(layout.image_dir(image))
        raise
    return manifest


def _upper_copies(upper: str, persist: list[str] | None) -> list[tuple[str, str]]:
    """What `--upper copy` takes from current's upper: all of it for an unsealed image, only the persistent
    paths for a sealed one (the same relative paths whichever kind current is): (source, path in upper)."""
    if not os.path.isdir(upper):
        return []
    if persist is None:
        return [(upper, "")]
    rels = [p.lstrip("/") for p in persist]
    return [(os.path.join(upper, r), r) for r in rels if os.path.isdir(os.path.join(upper, r))
            and not os.path.islink(os.path.join(upper, r))]
