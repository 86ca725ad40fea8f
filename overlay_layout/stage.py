"""Staging an update: copy a bank file's squashfs onto the banks partition in one pass (hashing while
copying), check it against its manifest and this machine, and only then make it `next` on trial.
Anything that fails leaves nothing behind but what was there before."""

from __future__ import annotations

import os
import stat

from overlay_layout import durable, hashing
from overlay_layout.bankfile import BankFile
from overlay_layout.contract import UnknownArch, arch_of_machine
from overlay_layout.errors import EXIT_STAGE, BankbootError
from overlay_layout.layout import DEFAULT_TRIES, DOWNLOAD, MANIFEST, SQUASHFS, STAGING, Layout, LayoutError
from overlay_layout.manifest import dump_manifest, split_persist
from overlay_layout.nofollow import check_dirs
from overlay_layout.state import Banks, StateError
from overlay_layout.trust import KeySet, Policy, TrustError, version_lt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from overlay_layout.records import Manifest

    Decrypt = Callable[[str], None]  # decrypts the encrypted bank being staged into a work directory
    Fill = Callable[[BankFile, str, Decrypt | None], None]

MARGIN = 4 << 20  # left free on the partition after staging, for state.json and the boot log
DEFAULT_RESERVE = 0  # extra room to leave free beyond MARGIN (the bankctl kit no longer lives on the partition)


class StageError(BankbootError):
    """The image was not staged (exit 4). `transient`: a retry may help (a download that failed on the way)."""

    exit_code = EXIT_STAGE


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


def stage(banks: Banks, bank_file: str, policy: Policy, running_version: str, tries: int = DEFAULT_TRIES,
          upper: str = "copy", machine: str | None = None, progress: Callable[[int, int], None] | None = None,
          allow_downgrade: bool = False, reserve: int = DEFAULT_RESERVE, booted: str | None = None) -> Manifest:
    """Stage a local bank file (or a block device holding one). `reserve`: bytes staging must leave free
    beyond MARGIN. `booted`: the running image, never replaced. The caller holds the banks lock (lock.py)."""
    def extract(bank: BankFile, work: str, decrypt: Decrypt | None) -> None:
        if decrypt is not None:
            decrypt(work)
            return
        for member in bank.payload():
            try:
                bank.extract(member, os.path.join(work, member.name), progress if member.name == SQUASHFS else None)
            except LayoutError as e:
                raise StageError(str(e)) from e

    def open_bank() -> BankFile:
        return BankFile(bank_file)

    return stage_from(banks, bank_file, open_bank, extract, policy, running_version, tries, upper, machine,
                      allow_downgrade, reserve, booted, progress=progress)


def stage_from(banks: Banks, where: str, open_bank: Callable[[], BankFile], fill: Fill,
               policy: Policy, running_version: str, tries: int = DEFAULT_TRIES, upper: str = "copy",
               machine: str | None = None, allow_downgrade: bool = False, reserve: int = DEFAULT_RESERVE,
               booted: str | None = None, resumable: bool = False,
               progress: Callable[[int, int], None] | None = None) -> Manifest:
    """The one staging sequence, whatever the source: open the bank (its manifest), check it (signature,
    floor, architecture, room), let `fill` put its squashfs, hash tree and chunk index into a work directory
    on the banks partition, add the rest of an image directory, rename it into place and make it `next` on
    trial. For an encrypted bank `fill` is given `decrypt`, which decrypts it into the work directory with
    this device's key (opened before anything is written, so a bank for another device is refused first),
    its chunks read from the bank's source or, from a server, taken from the installed images; None for a
    plain bank.
    The work directory of a local stage (layout.STAGING) is removed on any failure (and at every boot); a
    `resumable` one (`bankctl stage URL`, layout.DOWNLOAD) is kept so the next attempt resumes."""
    if upper not in ("copy", "fresh"):
        raise StageError(f"--upper must be copy or fresh, not {upper!r}")
    if tries < 1:
        raise StageError(f"--tries must be at least 1, not {tries}")
    layout = banks.layout
    banks.refuse_if_rollback_pending()
    # What a stage cut by a power loss left behind: it only takes space, and a retry must find room.
    banks.remove_staging_leftovers()
    try:
        bank = open_bank()
    except LayoutError as e:
        raise StageError(str(e)) from e
    with bank:
        manifest = bank.manifest
        image = manifest["id"]
        downgrade = _check(banks, manifest, where, policy, running_version, machine, allow_downgrade, booted)
        decrypt = _decrypting(banks, bank, policy, where, progress) if bank.encrypted else None
        work = os.path.join(layout.overlay, f"{DOWNLOAD if resumable else STAGING}{image}")
        cur = layout.pointer("current")
        copies = _upper_copies(layout, cur, manifest.get("persist")) if cur and upper == "copy" else []
        verity, index = manifest.get("verity"), manifest.get("chunks")
        need = manifest["size"] + (verity["size"] if verity else 0) + (index["size"] if index else 0)
        need += MARGIN + reserve + sum(tree_size(src) for src, _ in copies) - tree_size(work)
        fs = os.statvfs(layout.root)
        free = fs.f_bavail * fs.f_frsize
        if free < need:
            raise StageError(f"not enough space on the banks partition: {need / 1e6:.1f} MB needed "
                             f"(including {(MARGIN + reserve) / 1e6:.1f} MB kept free for the next boot), "
                             f"{free / 1e6:.1f} MB free (bankctl gc removes unused images)")
        durable.make_dirs(layout.overlay)
        if not resumable:
            durable.remove_tree(work)
        os.makedirs(work, exist_ok=True)
        try:
            fill(bank, work, decrypt)
            _complete(work, manifest, copies)
            durable.rename(work, layout.image_dir(image))
        except BaseException:
            if not resumable:
                durable.remove_tree(work)
            raise
    try:
        if downgrade:  # allowed by the initramfs and asked for: the trial must be able to boot
            banks.lower_boot_floor(banks.load(), manifest["version"])
        banks.add_trial(image, tries)
    except StateError:
        durable.remove_tree(layout.image_dir(image))
        raise
    return manifest


def _decrypting(banks: Banks, bank: BankFile, policy: Policy, where: str,
                progress: Callable[[int, int], None] | None) -> Decrypt:
    """The decryption of an encrypted bank: its content key opened now, with this device's key (an error
    naming the recipients when it is not for this device), the members decrypted into a work directory
    later (the chunks the installed images hold taken from them when the bank is on a server)."""
    from overlay_layout import encryption

    manifest = bank.manifest
    try:
        key = encryption.content_key(manifest, policy.device_key, where)
    except LayoutError as e:
        raise StageError(str(e)) from e
    remote = bank.source is not None

    def decrypt(work: str) -> None:
        try:
            manifest["_fetched"] = encryption.fill(bank, work, key, banks.layout if remote else None, progress)
        except LayoutError as e:
            raise StageError(str(e)) from e

    return decrypt


def _check(banks: Banks, manifest: Manifest, where: str, policy: Policy, running_version: str,
           machine: str | None, allow_downgrade: bool, booted: str | None) -> bool:
    """Everything that decides whether this image may be staged, before a byte of it is written. Returns
    whether it is an allowed downgrade."""
    try:
        keys = policy.in_force(banks)
        who = policy.check(manifest, running_version, keys)
        if manifest.get("key_updates"):
            _check_key_updates(manifest, keys, policy, running_version)
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
        raise StageError(str(e)) from e
    manifest["_signed_by"] = who
    try:
        arch = arch_of_machine(machine or os.uname().machine).debian
    except UnknownArch as e:
        raise StageError(str(e)) from e
    if manifest["arch"] != arch:
        raise StageError(f"{where} is an {manifest['arch']} image; this machine is {arch}")
    layout, image = banks.layout, manifest["id"]
    if os.path.exists(layout.image_dir(image)):
        pointed = layout.pointers_to(image)
        if pointed or image == booted:
            raise StageError(f"image {image} is already on the banks partition ({', '.join(pointed) or 'running'})")
        # Complete on disk but never made `next` (a cut after its rename): replace it.
        durable.remove_tree(layout.image_dir(image))
        durable.fsync_dir(layout.overlay)
    return downgrade


def _check_key_updates(manifest: Manifest, keys: KeySet, policy: Policy, running_version: str) -> None:
    """A bank that carries key updates: they must follow the chain in force (never a second update with one
    serial), each signed by enough keys of the set before and after it, and the image must verify under the
    set it leads to, or committing it would leave it unbootable."""
    from overlay_layout.keychain import changes, extend

    where = f"image {manifest['id']}"
    new = extend(keys, manifest["key_updates"], where)
    if new.serial == keys.serial:
        return
    try:
        policy.check(manifest, running_version, new)
    except TrustError as e:
        raise TrustError(f"{e}, under the keys its own key update {new.serial} puts in force: committing it would "
                         f"leave it unbootable (sign the bank with keys of the new set too)") from e
    manifest["_keys"] = changes(keys, new)


def _complete(work: str, manifest: Manifest, copies: list[tuple[str, str]]) -> None:
    """The rest of an image directory around the filled-in files: manifest, empty work/backups/utils, the
    upper (with the copies of current's changes), all fsynced. Redone whole when a resumed stage gets here
    again."""
    durable.write_file(os.path.join(work, MANIFEST),
                       dump_manifest({k: v for k, v in manifest.items() if not k.startswith("_")}))
    for name in ("work", "backups", "utils", "upper"):
        durable.remove_tree(os.path.join(work, name))
        os.mkdir(os.path.join(work, name))
    for src, rel in copies:
        dst = os.path.join(work, "upper", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        copy_upper(src, dst)
    for dirpath, _, _ in os.walk(work):
        durable.fsync_dir(dirpath)


def _upper_copies(layout: Layout, image: str, persist: list[str] | None) -> list[tuple[str, str]]:
    """What `--upper copy` takes from current's upper: all of it for an unsealed image, only the persistent
    paths for a sealed one (the same relative paths whichever kind current is): (source, path in upper). A
    directory reached through a symlink (planted in place of the upper or of a persistent path) is not
    copied: the link is never followed."""
    upper = layout.sub(image, "upper")
    rel = os.path.relpath(upper, layout.root)
    try:
        check_dirs(layout.root, rel)
    except OSError:
        return []
    if persist is None:
        return [(upper, "")]
    out = []
    for entry in persist:
        path = split_persist(entry)[0].lstrip("/")
        try:
            check_dirs(layout.root, f"{rel}/{path}")
        except OSError:
            continue
        out.append((os.path.join(upper, path), path))
    return out
