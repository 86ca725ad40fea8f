"""Assemble a board's initramfs: the frozen init (or, for comparison, a busybox-sh /init), bankctl's
launcher, a static busybox with its applet links (not in a sealed build: no shell there), the libraries
the init needs and the board's kernel modules, written as a reproducible cpio archive and compressed the
way the board says."""

from __future__ import annotations

import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from builder import compress as compression
from builder.board import Board
from builder.cpio import write_cpio
from builder.elf import LibraryResolver, is_elf, read_elf, resolve_in_root
from builder.errors import BuildError
from builder.freeze import CONTENTS_DIR, freeze_init
from builder.fstree import FsTree
from builder.kmod import ModuleError, module_closure, run_depmod
from builder.launcher import build_launcher
from builder.parts import KernelParts, kexec_method, locate_busybox, locate_kernel, locate_kexec_tools
from builder.pysysroot import PySysroot, locate_sysroot
from builder.xenshim import build_xen_shim
from initfs import VERSION
from overlay_layout import durable
from overlay_layout.contract import (
    CONF,
    ETC,
    KIT_LIST,
    LAUNCHER,
    MODULES,
    OPTIONAL_MARK,
    RUN,
    TRUST_DIR,
    InitramfsConf,
    archive_path,
    modules_list,
)

BASE_DIRS = ["bin", "sbin", "usr/bin", "usr/sbin", "lib", archive_path(ETC), "dev", "proc", "sys", "run",
             "tmp", "mnt", "root", "newroot"]
INIT_KINDS = ("frozen", "busybox-sh")

# The baseline /init for benchmarks: the same mounts and module loading as ours, in plain busybox sh.
BUSYBOX_INIT = f"#!/bin/sh\nmodules={MODULES} run={RUN}\n" + """\
# busybox's shell runs its applets through /proc/self/exe (there are no applet links): /proc first, by path.
/bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
echo "baseline busybox-sh init on Linux $(uname -r)"
echo "<7>baseline busybox-sh init on Linux" >/dev/kmsg
n=0
for m in $(cat $modules); do insmod /lib/modules/$(uname -r)/${m#\\?} && n=$((n+1)); done
echo "baseline: loaded $n kernel modules"
echo "<7>baseline: loaded $n kernel modules" >/dev/kmsg
if grep -q "root=" /proc/cmdline; then
  # The same hand-over as bankboot's, with the partitions fixed (bankboot disk: p2 banks, p3 userdata)
  # on the board's disk (virtio or SD card), waited for as rootwait would.
  b=$run/banks
  mkdir -p $b $run/lower /newroot
  p=
  while [ -z "$p" ]; do
    for d in /dev/vda /dev/mmcblk0p; do [ -b ${d}2 ] && p=$d; done
    [ -n "$p" ] || usleep 50000
  done
  mount -t ext4 -o nosuid,nodev ${p}2 $b
  d=$b/overlay/$(readlink $b/overlay/current)
  mount -t squashfs -o ro,loop $d/rootfs.squashfs $run/lower
  mount -t overlay -o lowerdir=$run/lower,upperdir=$d/upper,workdir=$d/work overlay /newroot
  mount -t ext4 -o nosuid,nodev ${p}3 /newroot/userdata
  for m in dev proc sys run; do /bin/busybox mount --move /$m /newroot/$m; done
  exec /bin/busybox switch_root /newroot /sbin/init  # /proc is moved: by path
fi
export PS1='(baseline) \\w # '
while true; do setsid cttyhack sh -l; done
"""


class InitramfsError(BuildError, ValueError):
    """An initramfs that cannot be built as asked (no trusted key, a kernel that defeats it) or read back."""


@dataclass(frozen=True)
class BuildResult:
    path: Path
    compressed: int
    unpacked: int
    compression: str
    kernel: KernelParts
    tls: Path | None = None  # the TLS piece written beside it (builder/tls.py)


def add_busybox(tree: FsTree, board: Board, sysroot: PySysroot | None = None) -> None:
    """Busybox: the rescue shell and the tools a development board's console needs. With the frozen init
    (sysroot given), Debian's dynamic busybox, which shares the init's libc (0.9 MB against the static one's
    1.9: every boot unpacks it); the rescue shell makes its applet links when it starts (initfs/rescue.py).
    For the busybox-sh baseline, the static one, whose shell runs its applets without links
    (FEATURE_SH_STANDALONE, through /proc/self/exe). Only /bin/sh is linked: four hundred applet links
    would cost every boot their unpacking and, at the hand-over, their deletion. Never in a sealed build
    (assemble): the kernel passes the words after `rdinit=` as arguments, so any multi-call binary is a shell
    (`rdinit=/bin/busybox sh`), and the sealed init needs none of it."""
    busybox = locate_busybox(board.arch, dynamic=sysroot is not None)
    tree.add_file("bin/busybox", src=busybox, mode=0o755)
    tree.add_symlink("bin/sh", "busybox")
    if sysroot is not None:
        resolver = LibraryResolver(sysroot.root, board.arch)
        resolver.add_program(busybox, "/bin/busybox")
        add_closure(tree, resolver, sysroot.root)


# Carried but not loaded at boot: `bankctl install-loader` loads them to write the boot partition (FAT).
# hash: the kernel's crypto socket (AF_ALG), loaded by a trial's first boot and by `bankctl stage` to hash with
# the kernel's SHA-256 (overlay_layout/kernelhash.py).
ON_DEMAND_MODULES = {"vfat": ("vfat", "nls_cp437", "nls_ascii"), "hash": ("algif_hash",)}


def add_modules(tree: FsTree, kernel: KernelParts, names: tuple[str, ...],
                optional: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Copy the modules' closure and give it a modules.dep of its own (so modprobe works in the shell);
    etc/bankboot/modules is the boot's load order (optional modules first, each line marked with
    OPTIONAL_MARK), etc/bankboot/modules.<use> each on-demand set's. An optional module this kernel lacks is
    left out with a warning. Returns (the boot's order, the on-demand modules' paths in the tree: bankctl's
    kit keeps them)."""
    import sys

    first: list[str] = []
    for name in optional:
        try:
            first += [r for r in module_closure(kernel.modules_dir, [name]) if r not in first]
        except ModuleError as e:
            print(f"warning: optional module left out: {e}", file=sys.stderr)
    order = [r for r in module_closure(kernel.modules_dir, names) if r not in first]
    on_demand = {}
    for use, mods in ON_DEMAND_MODULES.items():
        try:
            on_demand[use] = module_closure(kernel.modules_dir, mods)
        except ModuleError:  # a kernel of one's own without them: that feature says so when used
            pass
    base = f"lib/modules/{kernel.version}"
    with tempfile.TemporaryDirectory() as tmp:
        mdir = Path(tmp) / base
        for rel in sorted({*first, *order, *(r for rels in on_demand.values() for r in rels)}):
            dest = mdir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kernel.modules_dir / rel, dest)
        for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            if (kernel.modules_dir / meta).is_file():
                shutil.copyfile(kernel.modules_dir / meta, mdir / meta)
        mdir.mkdir(parents=True, exist_ok=True)
        run_depmod(Path(tmp), kernel.version)
        # depmod has read them: modules.order keeps the lines of the modules carried (150 KB for the whole
        # kernel), and the builtin modules' modinfo is already in the modules.builtin.*.bin it wrote.
        order_file = mdir / "modules.order"
        if order_file.is_file():
            order_file.write_text("".join(f"{ln}\n" for ln in order_file.read_text().splitlines()
                                          if (mdir / ln).is_file()))
        (mdir / "modules.builtin.modinfo").unlink(missing_ok=True)
        for f in sorted(mdir.rglob("*")):
            if f.is_file():
                tree.add_file(f"{base}/{f.relative_to(mdir)}", data=f.read_bytes(), mode=0o644)
    lines = [f"{OPTIONAL_MARK}{r}" for r in first] + order
    tree.add_file(archive_path(modules_list()), data="".join(f"{r}\n" for r in lines).encode())
    for use, rels in on_demand.items():
        tree.add_file(archive_path(modules_list(use)), data="".join(f"{r}\n" for r in rels).encode())
    return first + order, sorted({f"{base}/{r}" for rels in on_demand.values() for r in rels})


def add_closure(tree: FsTree, resolver: LibraryResolver, root: Path) -> None:
    """The libraries (and their symlinks) the resolver found under `root`, where not in the tree yet."""
    for link, target in sorted(resolver.closure.links.items()):
        if link.lstrip("/") not in tree:
            tree.add_symlink(link, target)
    for f in sorted(resolver.closure.files):
        if f.lstrip("/") not in tree:
            tree.add_file(f, src=root / f.lstrip("/"))


def add_kexec(tree: FsTree, board: Board, kernel: KernelParts) -> str:
    """How the init kexecs an image's own kernel on this board (docs/boards.md): the kexec_file_load
    syscall, or Debian's kexec-tools (with its libraries) where the kernel has only kexec_load."""
    from builder.kernelfile import KEXEC_FILE_ARCHES

    # 32-bit ARM: images cannot carry a kernel (builder/kernelfile.py), so no kexec-tools to carry either; nor
    # on a board whose firmware holds the CPUs a kexec needs back (board key boot.kexec).
    method = kexec_method(kernel, board.arch) if board.arch.debian in KEXEC_FILE_ARCHES and board.kexec else "none"
    if method == "tools":
        kexec = locate_kexec_tools(board.arch)
        root = kexec.parent.parent  # the packages unpacked together (parts.KEXEC_TOOLS_PACKAGES)
        tree.add_file("sbin/kexec", src=kexec, mode=0o755)
        resolver = LibraryResolver(root, board.arch)
        shim = build_xen_shim(board.arch, kexec)
        # The shim stands in for libxenctrl, whose own libraries are then not followed (builder/xenshim.py).
        resolver.add_program(kexec, "/sbin/kexec", provided=[shim.parent] if shim else None)
        add_closure(tree, resolver, root)
        if shim is not None:
            tree.add_file(f"usr/lib/{board.arch.triplet}/{shim.name}", src=shim, mode=0o644)
    return method


def add_frozen_init(tree: FsTree, sysroot: PySysroot, conf: InitramfsConf, keep: list[str] | None = None) -> None:
    """The onedir bundle at / (/init and /bankboot/...), plus every library its ELF files need from the
    sysroot at the path ld.so will look for it: the bootloader runs before anything sets
    LD_LIBRARY_PATH, so a copy inside the bundle is not enough for it."""
    bundle = freeze_init(sysroot)
    contents = bundle / CONTENTS_DIR
    tree.add_file("init", src=bundle / "init", mode=0o755)
    tree.add_host_path(CONTENTS_DIR, contents)
    resolver = LibraryResolver(sysroot.root, sysroot.arch)
    resolver.add_program(bundle / "init", "/init")
    for path in sorted(contents.rglob("*")):
        if path.is_file() and not path.is_symlink() and is_elf(path):
            target = "/" + str(path.relative_to(bundle))
            resolver.add_program(path, target, provided=[contents, path.parent])
    add_closure(tree, resolver, sysroot.root)
    # A library both in the bundle and in a system directory (libz: the bootloader needs it before
    # LD_LIBRARY_PATH is set) is stored once: the bundle's copy becomes a relative link, which also
    # resolves inside bankctl's kit at /run/bankboot/kit.
    system = {PurePosixPath(p).name: p for p in [*resolver.closure.files, *resolver.closure.links]}
    for lib in sorted(contents.iterdir()):
        if lib.name in system and lib.is_file() and not lib.is_symlink():
            tree.replace_with_symlink(f"{CONTENTS_DIR}/{lib.name}", "../" + system[lib.name].lstrip("/"))
    # The launcher runs ld.so by the path of the real file: PT_INTERP may be a symlink, and an absolute one
    # (amd64's /lib64/ld-linux-x86-64.so.2) would point outside the kit.
    conf.interp = resolve_in_root(sysroot.root, read_elf(bundle / "init").interp or "")
    conf.build = bundle.parent.name
    conf.libdirs = tuple(sorted({str(PurePosixPath(f).parent) for f in resolver.closure.files}))
    tree.add_file(archive_path(LAUNCHER), data=build_launcher(sysroot.arch, conf.interp, conf.libdirs), mode=0o755)
    # What switch_root keeps of the initramfs so bankctl runs in the booted image (initfs/switchroot.py).
    kit = ["init", CONTENTS_DIR, archive_path(LAUNCHER), archive_path(ETC), *(keep or []),
           *sorted(x.lstrip("/") for x in resolver.closure.links),
           *sorted(x.lstrip("/") for x in resolver.closure.files)]
    tree.add_file(archive_path(KIT_LIST), data="".join(f"{k}\n" for k in kit).encode())


@dataclass(frozen=True)
class TrustPolicy:
    """What the device will accept: images signed by these keys; unsigned ones only when built so for
    development; versions below the floor only when downgrades are allowed."""

    keys: tuple[Path, ...] = ()
    allow_unsigned: bool = False
    allow_downgrade: bool = False
    threshold: int = 1  # how many of the keys must sign an image


def add_trust(tree: FsTree, policy: TrustPolicy, conf: InitramfsConf) -> None:
    from overlay_layout.trust import key_id, read_public_key

    ids = []
    for path in policy.keys:
        pub = read_public_key(str(path))
        kid = key_id(pub)
        tree.add_file(f"{archive_path(TRUST_DIR)}/{kid}.pub", data=path.read_bytes())
        ids.append(kid)
    if not ids and not policy.allow_unsigned:
        raise InitramfsError("no trusted key given (--trust KEY.pub, or TRUST= for make): this initramfs would refuse "
                         "every image; use --insecure-allow-unsigned only for development")
    if not 1 <= policy.threshold <= max(1, len(set(ids))):
        raise InitramfsError(f"--threshold {policy.threshold}: an image must be signed by 1 to the {len(set(ids))} "
                         f"trusted key(s), or nothing could ever boot")
    conf.trusted, conf.unsigned, conf.downgrade = tuple(ids), policy.allow_unsigned, policy.allow_downgrade
    conf.threshold = policy.threshold


def add_network(tree: FsTree, board: Board, sysroot: PySysroot, conf: InitramfsConf) -> None:
    """HTTPS for `bankctl stage`: the TLS piece's sha256 (the piece itself is written beside the initramfs,
    never unpacked at boot: overlay_layout/net/tlspiece.py), the board's CA bundle, and where the device
    keeps its client certificate and key."""
    from builder.tls import tls_piece
    from overlay_layout.contract import NETWORK_CA
    from overlay_layout.net.tlspiece import digest

    conf.tls = digest(tls_piece(sysroot))
    if board.network_ca is not None:
        tree.add_file(archive_path(NETWORK_CA), data=board.network_ca.read_bytes(), mode=0o644)
    conf.client_cert, conf.client_key = board.client_cert, board.client_key


def assemble(board: Board, init: str = "frozen", policy: TrustPolicy | None = None) -> tuple[FsTree, KernelParts]:
    if init not in INIT_KINDS:
        raise InitramfsError(f"init kind {init!r} is not one of {', '.join(INIT_KINDS)}")
    kernel = locate_kernel(board)
    if board.sealed:
        refuse_root_capable_kernel(board, kernel)
    tree = FsTree()
    for d in BASE_DIRS:
        tree.add_dir(d)
    tree.add_dir("tmp", 0o1777)
    tree.add_device("dev/console", "char", 5, 1, 0o600)
    tree.add_device("dev/null", "char", 1, 3, 0o666)
    # Python reads random bytes for hash randomisation before the init mounts devtmpfs; where the kernel's
    # RNG is not ready yet (QEMU raspi3b) getrandom() says EAGAIN and Python falls back to this node.
    tree.add_device("dev/urandom", "char", 1, 9, 0o666)
    if not (board.sealed and init == "frozen"):
        add_busybox(tree, board, locate_sysroot(board.arch) if init == "frozen" else None)
    _, on_demand = add_modules(tree, kernel, board.modules, board.optional_modules)
    conf = InitramfsConf(board=board.name, kernel=kernel.version, arch=board.arch.debian, console=board.console,
                         bankboot=VERSION, init=init, image_modules=board.image_needs_modules,
                         rescue="reboot" if board.sealed else board.rescue, unconfirmed_boots=board.unconfirmed_boots,
                         sealed=board.sealed, kernel_name=board.kernel_name, device_key=board.device_key)
    if init == "frozen":
        add_trust(tree, policy or TrustPolicy(), conf)
        add_frozen_init(tree, locate_sysroot(board.arch), conf, on_demand)
        conf.kexec = add_kexec(tree, board, kernel)
        add_network(tree, board, locate_sysroot(board.arch), conf)
        if board.sealed:
            keep_only_programs(tree, {"init", archive_path(LAUNCHER), conf.interp.lstrip("/"), "sbin/kexec"})
    else:
        tree.add_file("init", data=BUSYBOX_INIT.encode(), mode=0o755)
    tree.add_file(archive_path(CONF), data=conf.render().encode())
    return tree, kernel


def refuse_root_capable_kernel(board: Board, kernel: KernelParts) -> None:
    """A sealed build's kernel must not mount a disk by itself (builder/kconfig.py): `rdinit=` naming no file
    and `root=`/`init=` would then run whatever the card holds."""
    from builder.kconfig import builtin_root_filesystems, kernel_config

    config = kernel_config(kernel)
    found = builtin_root_filesystems(config) if config else []
    if found:
        raise InitramfsError(f"board {board.name}: kernel {kernel.version} has {', '.join(found)} built in ({config}): "
                         f"with rdinit= naming no file it would mount root= itself and run any init= from the "
                         f"card; a sealed build needs those as modules")


def keep_only_programs(tree: FsTree, programs: set[str]) -> None:
    """Sealed builds: only the programs the init and bankctl start keep their execute bits, so they are all
    that `rdinit=` can name (tests/vm/test_rdinit.py tries each). Libraries need none: ld.so and dlopen map
    them, which only a noexec mount would refuse."""
    for path, entry in tree.entries.items():
        if entry.kind == "file" and path not in programs:
            entry.mode &= ~0o111


def read_settings(initramfs: Path) -> tuple[InitramfsConf, dict[str, bytes]]:
    """What an initramfs was built with: its initramfs.conf settings and its trusted public keys (by key
    id), read from the archive itself (`bankboot disk` and `bankboot inspect` check images against them)."""
    from builder.cpio import read_cpio
    from overlay_layout.trust import key_id, parse_public_key

    raw = initramfs.read_bytes()
    try:
        files = read_cpio(compression.decompress(raw, compression.detect(raw)))
    except (ValueError, OSError, RuntimeError) as e:
        raise InitramfsError(f"{initramfs} is not a bankboot initramfs: {e}") from e
    if archive_path(CONF) not in files:
        raise InitramfsError(f"{initramfs} is not a bankboot initramfs: it has no {CONF}")
    conf = InitramfsConf.parse(files[archive_path(CONF)].decode(errors="replace"))
    keys = {}
    for name, data in files.items():
        if name.startswith(archive_path(TRUST_DIR) + "/") and name.endswith(".pub"):
            public = parse_public_key(data.decode(errors="replace"), f"{initramfs}:{name}")
            keys[key_id(public)] = public
    return conf, keys


def build_initramfs(board: Board, output: Path, init: str = "frozen",
                    compression_method: str | None = None, policy: TrustPolicy | None = None) -> BuildResult:
    tree, kernel = assemble(board, init, policy)
    raw = io.BytesIO()
    write_cpio(tree, raw)
    method = compression_method or board.compression
    data = compression.compress(raw.getvalue(), method)
    output.parent.mkdir(parents=True, exist_ok=True)
    durable.write_file(str(output), data)
    tls = None
    if init == "frozen":
        from builder.tls import piece_path, tls_piece

        tls = piece_path(output)
        durable.write_file(str(tls), tls_piece(locate_sysroot(board.arch)))
    return BuildResult(output, len(data), len(raw.getvalue()), method, kernel, tls)
