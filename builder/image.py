"""`bankboot image`: a root filesystem directory becomes a bank file: an uncompressed tar holding
manifest.json first, then rootfs.squashfs and rootfs.verity (its dm-verity hash tree), so a device can
read and check what it is about to copy before copying it, in one pass. The squashfs is zstd, all files
owned by root, timestamps fixed: the same rootfs gives the same bytes. With a key, the manifest is signed
(ed25519); the signature covers the squashfs and hash tree through their hashes and the verity root hash."""

from __future__ import annotations

import hashlib
import io
import shlex
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from builder.arch import ARCHES
from builder.board import Board
from builder.cpio import source_date_epoch
from builder.elf import ElfError, read_elf, resolve_in_root
from builder.run import find_tool, run
from builder.signing import SigningError, add_members, finish_manifest
from initfs.version import VERSION
from overlay_layout import chunks, durable
from overlay_layout.bankfile import BankFile
from overlay_layout.hashing import hash_file
from overlay_layout.layout import MANIFEST, SQUASHFS, VERITY, LayoutError, check_id
from overlay_layout.manifest import FORMAT, KERNEL_FILES, check_persist, dump_manifest, parse_manifest, split_persist
from overlay_layout.trust import TrustError, parse_version, read_private_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.records import Manifest

_ARCH_BY_MACHINE = {(a.elf_machine, a.elf_class): a.debian for a in ARCHES.values()}


class ImageError(RuntimeError):
    pass


def rootfs_arch(rootfs: Path, init: str = "/sbin/init") -> str:
    """The Debian architecture of the rootfs's init (symlinks followed inside the rootfs; a script's `#!`
    interpreter followed too, up to four levels, as the kernel would)."""
    chain: list[str] = []
    for _ in range(5):
        real = resolve_in_root(rootfs, init)
        path = rootfs / real.lstrip("/")
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
    cmd = [mksquashfs, str(rootfs), str(output), "-comp", "zstd", "-all-root", "-noappend", "-no-progress",
           "-quiet", "-mkfs-time", epoch, "-all-time", epoch, "-processors", "1"]
    dirs = sorted({str(p) for path in (extra or {}) for p in PurePosixPath(path).parents if str(p) != "/"})
    for d in dirs:
        cmd += ["-p", f"{d} d 755 0 0"]
    for path, src in sorted((extra or {}).items()):
        cmd += ["-p", f"{path} f 644 0 0 cat {shlex.quote(str(src))}"]
    run(cmd, error=ImageError, package="squashfs-tools", what="mksquashfs")


def preflight_ranges(rootfs: Path, squashfs: Path, arch: str, init: str = "/sbin/init") -> dict:
    """The manifest's `preflight`: the squashfs's byte ranges holding the init and every file it needs to
    start (found as the device's preflight would find them), so each boot can prove they read back through
    dm-verity without decompressing them. An init that could not start is refused here, naming why."""
    from builder.squashfs import Squashfs, SquashfsError, merge_ranges
    from initfs.preflight import PreflightError, init_files
    from overlay_layout.contract import arch_named

    try:
        files = init_files(str(rootfs), init, arch_named(arch).uname, whole=False)
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


def prepare_kernel(rootfs: Path, arch: str, kernel: Path, initramfs: Path | None, board: str | Board | None,
                   sign_key: Path | None, trust: tuple[Path, ...], append: str, tmp: Path) -> tuple[dict, dict]:
    """The image's own kernel: (manifest `kernel` object, {path in the squashfs: file}). `board`: build the
    bankboot initramfs for this kernel (that board's settings, modules from the rootfs's own
    /lib/modules/<release>), trusting the signing key and `trust`."""
    from builder.kernelfile import KEXEC_FILE_ARCHES, KernelFileError, read_kernel

    if (rootfs / KERNEL_FILES["image"].lstrip("/")).parent.exists():
        raise ImageError(f"{rootfs}/boot/bankboot exists: that directory is where bankboot puts the image's "
                         f"kernel (give the kernel with --kernel instead)")
    try:
        k = read_kernel(kernel)
    except KernelFileError as e:
        raise ImageError(str(e)) from None
    if k.arch != arch:
        raise ImageError(f"--kernel {kernel} is an {k.arch} kernel; the image is {arch}")
    if arch not in KEXEC_FILE_ARCHES:
        raise ImageError(f"--kernel: bankboot kexecs kernels on {', '.join(KEXEC_FILE_ARCHES)} only, not {arch}")
    if (initramfs is None) == (board is None):
        raise ImageError("--kernel needs exactly one of --initramfs FILE (a bankboot initramfs for that kernel) "
                         "and --board BOARD (build one)")
    modules = rootfs / "lib/modules" / k.release
    if not (modules / "modules.dep").is_file():
        raise ImageError(f"--kernel {kernel} is release {k.release}, but {modules}/modules.dep does not exist: "
                         f"an image with its own kernel carries that kernel's modules (and runs depmod)")
    files: dict[str, Path] = {"image": tmp / "kernel"}
    files["image"].write_bytes(k.data)
    if board is not None:
        files["initramfs"] = build_kernel_initramfs(board, kernel, k.release, modules, arch, sign_key, trust,
                                                    tmp / "initramfs.img")
    elif initramfs is not None:
        files["initramfs"] = initramfs
    from builder.tls import piece_path

    if piece_path(files["initramfs"]).is_file():  # https for that initramfs's bankctl (builder/tls.py)
        files["tls"] = piece_path(files["initramfs"])
    obj: dict = {"release": k.release, "version": k.version}
    for name, src in files.items():
        obj[name] = {"path": KERNEL_FILES[name], "size": src.stat().st_size, "sha256": sha256_file(src)}
    if append:
        obj["append"] = append
    return obj, {KERNEL_FILES[name]: src for name, src in files.items()}


def build_kernel_initramfs(board_or_name: str | Board, kernel: Path, release: str, modules: Path, arch: str,
                           sign_key: Path | None, trust: tuple[Path, ...], out: Path) -> Path:
    import dataclasses

    from builder.board import BoardError, Kernel, load_board
    from builder.initramfs import TrustPolicy, build_initramfs
    from builder.keys import public_key_text

    try:
        board = load_board(board_or_name) if isinstance(board_or_name, str) else board_or_name
    except BoardError as e:
        raise ImageError(str(e)) from None
    if board.arch.debian != arch:
        raise ImageError(f"--board {board.name} is {board.arch.debian}; the image is {arch}")
    keys = list(trust)
    if sign_key is not None:  # the second stage must accept the image it was shipped in
        pub = out.parent / "signer.pub"
        pub.write_text(public_key_text(read_private_key(str(sign_key)), "image signer"))
        keys.append(pub)
    if not keys:
        raise ImageError("--board builds an initramfs that checks signatures: sign the image (--sign) or --trust KEY")
    from builder.kmod import ModuleError, module_closure

    have = []
    for m in board.modules:  # another flavour of kernel may lack some (Debian's cloud kernels: i6300esb)
        try:
            module_closure(modules, [m])
            have.append(m)
        except ModuleError:
            print(f"warning: board {board.name}'s module {m} is not in kernel {release} (neither a module in the "
                  f"rootfs nor built in): left out of the image's initramfs", file=sys.stderr)
    board = dataclasses.replace(board, modules=tuple(have),
                                kernel=Kernel(image=kernel, modules_dir=modules, version=release))
    build_initramfs(board, out, policy=TrustPolicy(tuple(keys)))
    return out


def sha256_file(path: Path) -> str:
    return hash_file(str(path))[1]


def build_image(rootfs: Path, version: str, output: Path, image_id: str | None = None,
                sign_key: Path | tuple[Path, ...] | None = None, min_bankboot: str = VERSION,
                confirm_boots: bool = False, persist: list[str] | None = None, arch: str | None = None,
                kernel: Path | None = None,
                kernel_initramfs: Path | None = None, kernel_board: str | Board | None = None, kernel_append: str = "",
                trust: tuple[Path, ...] = (), encrypt_to: tuple[Path, ...] = (),
                key_updates: Path | None = None) -> dict:
    """confirm_boots: the image promises to run `bankctl boot-ok` once it is up; a device that sees it boot
    that many times in a row without one (the board's limit) falls back to the previous image.
    persist: the image's persistence policy (a sealed image): only these directories keep changes on the
    banks partition; the rest of the root is the verified squashfs under a tmpfs. None: the whole root
    keeps changes (unsealed).
    kernel: the image carries its own kernel (and a bankboot initramfs for it: kernel_initramfs, or built for
    kernel_board), which the init on the boot partition kexecs when it differs from the running one.
    sign_key: one private key or several (each adds a signature); key_updates: a chain file whose key
    updates the image carries (builder/signing.py); encrypt_to: X25519 public keys the bank is encrypted for."""
    sign_keys = (sign_key,) if isinstance(sign_key, Path) else tuple(sign_key or ())
    if not rootfs.is_dir():
        raise ImageError(f"rootfs {rootfs} is not a directory")
    try:
        parse_version(version)
        parse_version(min_bankboot)
        for key in sign_keys:
            read_private_key(str(key))
    except TrustError as e:
        raise ImageError(str(e)) from None
    if arch is None:
        arch = rootfs_arch(rootfs)
    elif arch not in {a.debian for a in ARCHES.values()}:
        raise ImageError(f"--arch {arch!r} is not one of {', '.join(sorted({a.debian for a in ARCHES.values()}))}")
    paths = check_persist_paths(rootfs, persist) if persist else None
    if kernel is None and (kernel_initramfs or kernel_board or kernel_append):
        raise ImageError("--initramfs, --board and --kernel-append describe the image's own kernel: give --kernel")
    with tempfile.TemporaryDirectory(dir=output.parent if output.parent.exists() else None) as tmp:
        sq = Path(tmp) / SQUASHFS
        kobj, extra = (prepare_kernel(rootfs, arch, kernel, kernel_initramfs, kernel_board,
                                      sign_keys[0] if sign_keys else None, trust, kernel_append, Path(tmp))
                       if kernel else (None, {}))
        make_squashfs(rootfs, sq, extra)
        digest = sha256_file(sq)
        salt = hashlib.sha256(b"bankboot-verity" + bytes.fromhex(digest)).hexdigest()  # reproducible
        verity = make_verity(sq, Path(tmp) / VERITY, salt=salt)
        index = Path(tmp) / chunks.MEMBER
        index.write_bytes(chunks.dump(chunks.index_of(sq.read_bytes())))
        manifest = {
            "format": FORMAT,
            "id": check_id(image_id or f"{version}-{digest[:12]}"),
            "version": version,
            "arch": arch,
            "size": sq.stat().st_size,
            "sha256": digest,
            "created": datetime.fromtimestamp(source_date_epoch(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "min_bankboot": min_bankboot,
            "verity": verity,
            "chunks": {"size": index.stat().st_size, "sha256": sha256_file(index),
                       "count": (index.stat().st_size - len(chunks.MAGIC)) // chunks.ENTRY.size},
        }
        manifest["preflight"] = preflight_ranges(rootfs, sq, arch)
        if confirm_boots:
            manifest["confirm_boots"] = True
        if paths:
            manifest["persist"] = paths
        if kobj:
            manifest["kernel"] = kobj
        try:
            manifest, files = finish_manifest(manifest, [sq, Path(tmp) / VERITY, index], sign_keys, key_updates,
                                              encrypt_to, Path(tmp))
        except SigningError as e:
            raise ImageError(str(e)) from None
        data = dump_manifest(manifest)
        parse_manifest(data, "new manifest")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(data), 0o644, source_date_epoch()
            tar.addfile(info, io.BytesIO(data))
            add_members(tar, files, source_date_epoch())
        output.parent.mkdir(parents=True, exist_ok=True)
        durable.write_file(str(output), buf.getvalue())
    return manifest


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
