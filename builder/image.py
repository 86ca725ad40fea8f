"""`bankboot image`: a root filesystem (a directory, an image's layers, a tarball: builder/source.py)
becomes a bank file: an uncompressed tar holding manifest.json first, then rootfs.squashfs, rootfs.verity
(its dm-verity hash tree) and rootfs.chunks (its chunk index), so a device can read and check what it is
about to copy before copying it, in one pass. The squashfs is zstd; the same source gives the same bytes
(builder/imagetree.py says how for each kind). With a key, the manifest is signed (ed25519); the signature
covers the squashfs, hash tree and chunk index through their hashes and the verity root hash. Nothing is
held in memory whole: the parts are files in a temporary directory beside the output, renamed into place
at the end, so a failure leaves no output."""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from builder.arch import ARCHES
from builder.board import Board
from builder.cpio import source_date_epoch
from builder.elf import ElfError, read_elf, resolve_in_root
from builder.errors import ImageError
from builder.run import find_tool, run
from builder.signing import SigningError, finish_manifest
from initfs import VERSION
from overlay_layout import chunks
from overlay_layout.bankfile import BankFile
from overlay_layout.hashing import hash_file
from overlay_layout.layout import SQUASHFS, VERITY, LayoutError, check_id
from overlay_layout.manifest import FORMAT, check_persist, dump_manifest, parse_manifest, split_persist
from overlay_layout.trust import TrustError, parse_version, read_private_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.records import Manifest

__all__ = ["ImageError", "build_image", "check_persist_paths", "make_squashfs", "preflight_ranges", "rootfs_arch"]

_ARCH_BY_MACHINE = {(a.elf_machine, a.elf_class): a.debian for a in ARCHES.values()}


def rootfs_arch(rootfs: Path, init: str = "/sbin/init", fill: Callable[[Path], None] | None = None) -> str:
    """The Debian architecture of the rootfs's init (symlinks followed inside the rootfs; a script's `#!`
    interpreter followed too, up to four levels, as the kernel would). fill: gives a skeleton's file its
    bytes before it is read."""
    chain: list[str] = []
    for _ in range(5):
        real = resolve_in_root(rootfs, init)
        path = rootfs / real.lstrip("/")
        if fill is not None:
            fill(path)
        if not path.is_file():
            what = f"{init} (looked at {real})" + (f", the interpreter of {' -> '.join(chain)}" if chain else "")
            raise ImageError(f"{rootfs} has no {what}: an image must have an init to boot")
        head = path.read_bytes()[:256]
        if not head.startswith(b"#!"):
            break
        words = head[2:].split(b"\n", 1)[0].split()
        if not words:
            raise ImageError(f"{rootfs}{real}: a script whose #! line names no interpreter")
        chain.append(real)
        init = words[0].decode(errors="replace")
    else:
        raise ImageError(f"{rootfs}: the init's #! interpreters nest too deep ({' -> '.join(chain)})")
    try:
        info = read_elf(path)
    except ElfError:
        raise ImageError(f"{rootfs}{real} is not an ELF program; cannot tell the image's architecture "
                         f"(give --arch)") from None
    try:
        return _ARCH_BY_MACHINE[(info.machine, info.elfclass)]
    except KeyError:
        raise ImageError(f"{rootfs}/sbin/init is {info.machine} ({info.elfclass}-bit), not an architecture "
                         f"bankboot knows") from None


def check_persist_paths(rootfs: Path, persist: list[str]) -> list[str]:
    """The persistence policy against the rootfs: each path a real directory of the image (its lower layer),
    none holding the image's init."""
    try:
        paths = check_persist(list(persist), "--persist")
    except LayoutError as e:
        raise ImageError(str(e)) from None
    init = resolve_in_root(rootfs, "/sbin/init")
    for p in (split_persist(e)[0] for e in paths):
        d = rootfs / p.lstrip("/")
        # No part of it a symlink: the init refuses one (it would put the mount elsewhere).
        if any(d.parents[i].is_symlink() for i in range(p.count("/") - 1)) or d.is_symlink() or not d.is_dir():
            raise ImageError(f"--persist {p}: {d} is not a directory in the rootfs (a persistent path is mounted "
                             f"over the image's own directory; create it, even empty)")
        if init == p or init.startswith(p + "/"):
            raise ImageError(f"--persist {p}: the image's init {init} is inside it; it must come from the "
                             f"signed image")
    return paths


def make_squashfs(rootfs: Path, output: Path, extra: dict[str, Path] | None = None) -> None:
    """extra: files added at these absolute paths (parents made), without touching the rootfs."""
    mksquashfs = find_tool("mksquashfs", "squashfs-tools", ImageError)
    epoch = str(source_date_epoch())
    # mksquashfs refuses SOURCE_DATE_EPOCH beside -mkfs-time/-all-time; the options carry it.
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    cmd = [mksquashfs, str(rootfs), str(output), "-comp", "zstd", "-all-root", "-noappend", "-no-progress",
           "-quiet", "-mkfs-time", epoch, "-all-time", epoch, "-processors", "1"]
    dirs = sorted({str(p) for path in (extra or {}) for p in PurePosixPath(path).parents if str(p) != "/"})
    for d in dirs:
        cmd += ["-p", f"{d} d 755 0 0"]
    for path, src in sorted((extra or {}).items()):
        cmd += ["-p", f"{path} f 644 0 0 cat {shlex.quote(str(src))}"]
    run(cmd, error=ImageError, package="squashfs-tools", what="mksquashfs", env=env)


def preflight_ranges(rootfs: Path, squashfs: Path, arch: str, init: str = "/sbin/init",
                     fetch: Callable[[str], None] | None = None) -> dict:
    """The manifest's `preflight`: the squashfs's byte ranges holding the init and every file it needs to
    start (found as the device's preflight would find them), so each boot can prove they read back through
    dm-verity without decompressing them. An init that could not start is refused here, naming why."""
    from builder.squashfs import Squashfs, SquashfsError, merge_ranges
    from initfs.preflight import PreflightError, init_files
    from overlay_layout.contract import arch_named

    try:
        files = init_files(str(rootfs), init, arch_named(arch).uname, whole=False, fetch=fetch)
    except PreflightError as e:
        raise ImageError(f"{rootfs}: the image's init cannot start: {e}") from None
    try:
        image = Squashfs(str(squashfs))
        extents = [e for f in files for e in image.extents(f)]
    except SquashfsError as e:
        raise ImageError(f"cannot find the init's files in the squashfs: {e}") from None
    return {"init": init, "ranges": merge_ranges(extents)}


def make_verity(squashfs: Path, output: Path, salt: str) -> dict:
    """The dm-verity hash tree of the squashfs, without a superblock (the manifest carries the
    parameters), with cryptsetup's veritysetup."""
    if squashfs.stat().st_size % 4096:
        raise ImageError(f"{squashfs} is not a whole number of 4096-byte blocks (mksquashfs pads unless -nopad)")
    proc = run(["veritysetup", "format", "--no-superblock", "--hash", "sha256", "--data-block-size", "4096",
                "--hash-block-size", "4096", "--salt", salt, str(squashfs), str(output)], error=ImageError,
               package="cryptsetup-bin", what="veritysetup format")
    lines = proc.stdout.splitlines()
    root = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Root hash:")), "")
    if len(root) != 64:
        raise ImageError(f"veritysetup printed no root hash:\n{proc.stdout}")
    return {"root_hash": root, "salt": salt, "hash_algorithm": "sha256", "data_block_size": 4096,
            "hash_block_size": 4096, "size": output.stat().st_size, "sha256": sha256_file(output)}


def sha256_file(path: Path) -> str:
    return hash_file(str(path))[1]


def build_image(rootfs: Path | None, version: str, output: Path, image_id: str | None = None,
                sign_key: Path | tuple[Path, ...] | None = None, min_bankboot: str = VERSION,
                confirm_boots: bool = False, persist: list[str] | None = None, arch: str | None = None,
                kernel: Path | str | None = None,
                kernel_initramfs: Path | None = None, kernel_board: str | Board | None = None, kernel_append: str = "",
                trust: tuple[Path, ...] = (), source: str | None = None, strict: bool = False,
                say: Callable[[str], None] | None = None, encrypt_to: tuple[Path, ...] = (),
                key_updates: Path | None = None) -> dict:
    """rootfs: a root filesystem directory, or None with `source` (`--from SOURCE`, builder/source.py).
    confirm_boots: the image promises to run `bankctl boot-ok` once it is up; a device that sees it boot
    that many times in a row without one (the board's limit) falls back to the previous image.
    persist: the image's persistence policy (a sealed image): only these directories keep changes on the
    banks partition; the rest of the root is the verified squashfs under a tmpfs. None: the whole root
    keeps changes (unsealed).
    kernel: the image carries its own kernel, a file or "image" (the one in its /usr/lib/modules), with a
    bankboot initramfs for it (kernel_initramfs, or built for kernel_board), which the init on the boot
    partition kexecs when it differs from the running one.
    strict: lint warnings refuse the image. say: where warnings and notes go (stderr).
    sign_key: one private key or several (each adds a signature); key_updates: a chain file whose key
    updates the image carries (builder/signing.py); encrypt_to: X25519 public keys the bank is encrypted for."""
    from builder.imagetree import KernelRequest, tree_from_dir, tree_from_layers
    from builder.lint import lint
    from builder.pack import index_file, write_bank
    from builder.source import SourceError, open_source

    sign_keys = (sign_key,) if isinstance(sign_key, Path) else tuple(sign_key or ())
    say = say or (lambda line: print(line, file=sys.stderr))
    if (rootfs is None) == (source is None):
        raise ImageError("give the root filesystem as exactly one of --rootfs DIR and --from SOURCE")
    try:
        parse_version(version)
        parse_version(min_bankboot)
        for key in sign_keys:
            read_private_key(str(key))
    except TrustError as e:
        raise ImageError(str(e)) from None
    if arch is not None and arch not in ARCHES:
        raise ImageError(f"--arch {arch!r} is not one of {', '.join(sorted(ARCHES))}")
    if kernel is None and (kernel_initramfs or kernel_board or kernel_append):
        raise ImageError("--initramfs, --board and --kernel-append describe the image's own kernel: give --kernel")
    if persist:
        check_persist_paths_syntax(persist)
    k = KernelRequest(kernel, kernel_initramfs, kernel_board, kernel_append, sign_keys[0] if sign_keys else None,
                      trust)  # the second stage trusts the first signer
    with tempfile.TemporaryDirectory(dir=existing_parent(output), prefix=".bankboot-image-") as tmpdir:
        tmp = Path(tmpdir)
        sq = tmp / SQUASHFS
        if rootfs is not None:
            if not rootfs.is_dir():
                raise ImageError(f"rootfs {rootfs} is not a directory")
            tree = tree_from_dir(rootfs, sq, arch, k, tmp)
        else:
            assert source is not None
            try:
                src = open_source(source, arch, tmp / "source")
            except SourceError as e:
                raise ImageError(str(e)) from None
            if src.pin:
                say(f"{source}: pulled {src.pin} (give that to build the same image again)")
            tree = tree_from_dir(src.rootfs, sq, arch, k, tmp) if src.rootfs else \
                tree_from_layers(src, sq, arch, k, tmp, say)
        paths = check_persist_paths(tree.root, persist) if persist else None
        findings = lint(tree.root, k.from_image)
        for f in findings:
            say(str(f))
        refused = [f for f in findings if f.severity == "error" or strict]
        if refused:
            raise ImageError(f"{len(refused)} problem(s) in the image" + (" (--strict)" if strict else "") + ":\n" +
                             "\n".join(f"  {f}" for f in refused))
        digest = sha256_file(sq)
        salt = hashlib.sha256(b"bankboot-verity" + bytes.fromhex(digest)).hexdigest()  # reproducible
        verity = make_verity(sq, tmp / VERITY, salt=salt)
        index = tmp / chunks.MEMBER
        index.write_bytes(index_file(sq))
        manifest = {
            "format": FORMAT,
            "id": check_id(image_id or f"{version}-{digest[:12]}"),
            "version": version,
            "arch": tree.arch,
            "size": sq.stat().st_size,
            "sha256": digest,
            "created": datetime.fromtimestamp(tree.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "min_bankboot": min_bankboot,
            "verity": verity,
            "chunks": {"size": index.stat().st_size, "sha256": sha256_file(index),
                       "count": (index.stat().st_size - len(chunks.MAGIC)) // chunks.ENTRY.size},
        }
        manifest["preflight"] = preflight_ranges(tree.root, sq, tree.arch, fetch=tree.fetch)
        if confirm_boots:
            manifest["confirm_boots"] = True
        if paths:
            manifest["persist"] = paths
        if tree.kernel:
            manifest["kernel"] = tree.kernel
        try:
            manifest, files = finish_manifest(manifest, [sq, tmp / VERITY, index], sign_keys, key_updates,
                                              encrypt_to, tmp)
        except SigningError as e:
            raise ImageError(str(e)) from None
        data = dump_manifest(manifest)
        parse_manifest(data, "new manifest")
        write_bank(output, data, files, tree.created)
    return manifest


def check_persist_paths_syntax(persist: list[str]) -> None:
    """The policy's own rules, before anything is built (check_persist_paths checks it against the image)."""
    try:
        check_persist(list(persist), "--persist")
    except LayoutError as e:
        raise ImageError(str(e)) from None


def existing_parent(path: Path) -> Path:
    """The nearest directory above `path` that exists (the temporary files go there, on the output's
    filesystem, and nothing is created where the output goes until it is written)."""
    parent = path.absolute().parent
    while not parent.is_dir():
        parent = parent.parent
    return parent


def read_bank(path: Path) -> BankFile:
    """Open a bank file (overlay_layout.bankfile: the one reader of the format); ImageError when it is not
    one. The caller closes it."""
    try:
        return BankFile(str(path))
    except LayoutError as e:
        raise ImageError(str(e)) from None


def extract_image(path: Path, dest_dir: Path, device_key: Path | None = None) -> Manifest:
    """Copy the bank's squashfs and verity tree into dest_dir, checking each against its manifest (an encrypted
    bank decrypted with `device_key`, a recipient's private key)."""
    with read_bank(path) as bank:
        if bank.encrypted:
            from overlay_layout import encryption

            if device_key is None:
                raise ImageError(f"{path} is encrypted: give --device-key KEY (a recipient's private key)")
            try:
                encryption.fill(bank, str(dest_dir), encryption.content_key(bank.manifest, str(device_key), str(path)),
                                None)
            except LayoutError as e:
                raise ImageError(str(e)) from None
            return bank.manifest
        for member in bank.payload():
            try:
                bank.extract(member, str(dest_dir / member.name))
            except LayoutError as e:
                raise ImageError(str(e)) from None
        return bank.manifest
