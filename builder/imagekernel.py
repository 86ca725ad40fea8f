"""An image's own kernel (docs/lifecycle.md: the init on the boot partition kexecs it): given as a file
(`--kernel FILE`, its modules in the rootfs) or taken from the image itself (`--kernel image`: the kernel and
modules in /usr/lib/modules/<release>/ as bootc images carry them, kernel arguments from
/usr/lib/bootc/kargs.d/*.toml). Either way the same checks: a kernel bankboot can kexec, of the image's
architecture, with its modules and modules.dep in the image, and a bankboot initramfs for it."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from builder.board import Board
from builder.elf import resolve_in_root
from builder.errors import ImageError
from builder.lint import KARGS_D, MODULES, image_kernels
from overlay_layout.hashing import hash_file
from overlay_layout.manifest import KERNEL_FILES
from overlay_layout.trust import read_private_key

IMAGE = "image"  # --kernel image
# kargs.d's match-architectures names architectures as Rust's std::env::consts::ARCH does.
BOOTC_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "arm"}


def image_kernel(rootfs: Path) -> tuple[str, Path]:
    """(release, the kernel file) of the one kernel in the image's /usr/lib/modules."""
    kernels = image_kernels(rootfs)
    if len(kernels) != 1:
        what = f"holds {', '.join(kernels)}" if kernels else "holds no <release>/vmlinuz"
        raise ImageError(f"--kernel image: {MODULES} {what}; it takes exactly one kernel from there (keep one kernel "
                         f"package in the image, or give --kernel FILE)")
    real = resolve_in_root(rootfs, f"{MODULES}/{kernels[0]}/vmlinuz")
    return kernels[0], rootfs / real.lstrip("/")


def image_kargs(rootfs: Path, arch: str) -> list[str]:
    """The kernel arguments of /usr/lib/bootc/kargs.d/*.toml, in file name order, for this architecture."""
    d = rootfs / resolve_in_root(rootfs, KARGS_D).lstrip("/")
    out: list[str] = []
    for f in sorted(d.glob("*.toml")) if d.is_dir() else []:
        shown = f"{KARGS_D}/{f.name}"
        try:
            data = tomllib.loads(f.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
            raise ImageError(f"{shown}: not valid TOML ({e})") from None
        kargs, only = data.get("kargs", []), data.get("match-architectures")
        if not isinstance(kargs, list) or not all(isinstance(k, str) and k and " " not in k for k in kargs):
            raise ImageError(f"{shown}: 'kargs' must be a list of kernel arguments (strings without spaces)")
        if only is not None and (not isinstance(only, list) or not all(isinstance(a, str) for a in only)):
            raise ImageError(f"{shown}: 'match-architectures' must be a list of architectures (x86_64, aarch64)")
        if only is None or BOOTC_ARCH[arch] in only:
            out += kargs
    return out


def sha256_file(path: Path) -> str:
    return hash_file(str(path))[1]


def prepare_kernel(rootfs: Path, arch: str, kernel: Path, initramfs: Path | None, board: str | Board | None,
                   sign_key: Path | None, trust: tuple[Path, ...], append: str, tmp: Path,
                   release: str | None = None) -> tuple[dict, dict]:
    """The image's own kernel: (manifest `kernel` object, {path in the squashfs: file}). `board`: build the
    bankboot initramfs for this kernel (that board's settings, modules from the rootfs's own
    /lib/modules/<release>), trusting the signing key and `trust`. `release`: the kernel came from the
    image's /usr/lib/modules/<release>, and must be that release."""
    from builder.kernelfile import KEXEC_FILE_ARCHES, KernelFileError, read_kernel

    what = f"--kernel {kernel}" if release is None else f"--kernel image ({MODULES}/{release}/vmlinuz)"
    if (rootfs / KERNEL_FILES["image"].lstrip("/")).parent.exists():
        raise ImageError(f"{rootfs}/boot/bankboot exists: that directory is where bankboot puts the image's "
                         f"kernel (give the kernel with --kernel instead)")
    try:
        k = read_kernel(kernel)
    except KernelFileError as e:
        raise ImageError(str(e)) from None
    if k.arch != arch:
        raise ImageError(f"{what} is an {k.arch} kernel; the image is {arch}")
    if release is not None and k.release != release:
        raise ImageError(f"{what} is release {k.release}, not {release}: its modules would not load")
    if arch not in KEXEC_FILE_ARCHES:
        raise ImageError(f"--kernel: bankboot kexecs kernels on {', '.join(KEXEC_FILE_ARCHES)} only, not {arch}")
    if (initramfs is None) == (board is None):
        raise ImageError("--kernel needs exactly one of --initramfs FILE (a bankboot initramfs for that kernel) "
                         "and --board BOARD (build one)")
    modules = rootfs / resolve_in_root(rootfs, f"/lib/modules/{k.release}").lstrip("/")
    if not (modules / "modules.dep").is_file():
        raise ImageError(f"{what} is release {k.release}, but {modules}/modules.dep does not exist: "
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
