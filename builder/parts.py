"""The parts an initramfs is made of that come from Debian: the kernel (image, modules, device trees)
and the static busybox, fetched once into the cache. `fetch_*` download when needed; `locate_*` only look
and say how to fetch when something is missing."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from builder import debian
from builder.arch import Arch
from builder.board import Board
from builder.errors import BuildError
from builder.kmod import run_depmod
from builder.paths import cache_dir, fetch_hint
from builder.run import run


class PartsError(BuildError):
    pass


@dataclass(frozen=True)
class KernelParts:
    version: str  # the kernel release, `uname -r`
    image: Path
    modules_dir: Path  # .../lib/modules/<version>, with modules.dep
    dtb_dir: Path | None  # device trees shipped with the kernel package


def _record(arch: Arch, package: str) -> Path:
    return cache_dir() / "kernel" / arch.debian / f"{package}.json"


# Another flavour of each architecture's Debian kernel: a kernel an image can carry that differs from the
# boards' own, for the kexec tests and bench (`bankboot deps` fetches it with the board's kernel).
SECOND_KERNELS = {"arm64": "linux-image-cloud-arm64", "amd64": "linux-image-cloud-amd64"}


def fetch_kernel(board: Board) -> KernelParts:
    """Download and unpack the board's Debian kernel package (metapackages resolved) and run depmod."""
    if board.kernel.package is None:
        return locate_kernel(board)
    fetch_kernel_package(board.arch, board.kernel.package)
    return locate_kernel(board)


def fetch_kernel_package(arch: Arch, package: str) -> KernelParts:
    """One Debian kernel package, unpacked under the cache with its modules.dep (cached by version)."""
    versioned = debian.resolve_package(package, arch.debian)
    deb_version = debian.package_version(versioned, arch.debian)
    root = cache_dir() / "kernel" / arch.debian / versioned
    stamp = f"{versioned} {deb_version}\n"
    if not ((root / ".bankboot-unpacked").exists() and (root / ".bankboot-unpacked").read_text() == stamp):
        debs = debian.download([versioned], arch.debian, cache_dir() / "debs" / arch.debian)
        debian.unpack(debs, root, stamp)
    release = _release_of(root)
    if not (root / "lib/modules" / release / "modules.dep").is_file():
        run_depmod(root, release, root / "boot" / f"System.map-{release}")
    rec = _record(arch, package)
    rec.write_text(json.dumps({"package": versioned, "deb_version": deb_version, "root": str(root)}))
    return locate_kernel_package(arch, package)


def _release_of(root: Path) -> str:
    releases = sorted(p.name for p in (root / "lib/modules").iterdir() if p.is_dir())
    if len(releases) != 1:
        raise PartsError(f"{root}/lib/modules holds {releases}, expected exactly one kernel release")
    return releases[0]


def locate_kernel(board: Board) -> KernelParts:
    k = board.kernel
    if k.package is None:
        assert k.image is not None and k.modules_dir is not None
        if not k.image.is_file():
            raise PartsError(f"{board.path}: kernel image {k.image} does not exist")
        if not (k.modules_dir / "modules.dep").is_file():
            raise PartsError(f"{board.path}: {k.modules_dir}/modules.dep does not exist (run depmod for it)")
        return KernelParts(k.version or k.modules_dir.name, k.image, k.modules_dir, None)
    if not _record(board.arch, k.package).is_file():
        raise PartsError(f"the kernel for board {board.name} ({k.package}:{board.arch.debian}) is not "
                         f"fetched yet ({fetch_hint()})")
    return locate_kernel_package(board.arch, k.package)


def locate_kernel_package(arch: Arch, package: str) -> KernelParts:
    rec = _record(arch, package)
    if not rec.is_file():
        raise PartsError(f"kernel package {package}:{arch.debian} is not fetched yet ({fetch_hint()})")
    return _kernel_parts(rec, rec.stat().st_mtime_ns)


@functools.cache
def _kernel_parts(rec: Path, _stamp: int) -> KernelParts:
    """The kernel a fetch record points at, found once per record version (one boot asks many times)."""
    root = Path(json.loads(rec.read_text())["root"])
    release = _release_of(root)
    image = root / "boot" / f"vmlinuz-{release}"
    dtbs = root / "usr/lib" / f"linux-image-{release}"
    return KernelParts(release, image, root / "lib/modules" / release, dtbs if dtbs.is_dir() else None)


# Debian's kexec-tools is built with Xen support: /sbin/kexec needs libxenctrl (in libxenmisc4.17) and the
# libraries that needs. Unpacked together with libc and zlib, so its library closure resolves in one root.
KEXEC_TOOLS_PACKAGES = ["kexec-tools", "libxenmisc4.17", "libxencall1", "libxendevicemodel1", "libxenevtchn1",
                        "libxenforeignmemory1", "libxengnttab1", "libxentoolcore1", "libxentoollog1", "libc6",
                        "zlib1g"]


def _fetch_packages(packages: list[str], arch: Arch, subdir: str) -> None:
    """Debian packages unpacked together under the cache (again only when a version changed)."""
    versions = debian.package_versions(packages, arch.debian)
    root = cache_dir() / subdir / arch.debian
    stamp = "".join(f"{p} {versions[p]}\n" for p in packages)
    if not ((root / ".bankboot-unpacked").exists() and (root / ".bankboot-unpacked").read_text() == stamp):
        debs = debian.download(packages, arch.debian, cache_dir() / "debs" / arch.debian)
        debian.unpack(debs, root, stamp)


def fetch_busybox(arch: Arch) -> Path:
    """The static busybox for `arch` from Debian's busybox-static (sample images, the baseline init), and the
    dynamic one from Debian's busybox (a development initramfs's rescue shell: it shares the init's libc)."""
    _fetch_packages(["busybox-static"], arch, "busybox")
    _fetch_packages(["busybox"], arch, "busybox-dynamic")
    return locate_busybox(arch)


def fetch_kexec_tools(arch: Arch) -> Path:
    """Debian's kexec-tools: the loader's way to kexec on kernels without kexec_file_load (Debian's arm64
    and armhf kernels); its libraries come from the target sysroot like the init's."""
    _fetch_packages(KEXEC_TOOLS_PACKAGES, arch, "kexec-tools")
    return locate_kexec_tools(arch)


def locate_kexec_tools(arch: Arch) -> Path:
    path = cache_dir() / "kexec-tools" / arch.debian / "sbin" / "kexec"
    if not path.is_file():
        raise PartsError(f"kexec-tools for {arch.debian} is not fetched yet ({fetch_hint()})")
    return path


def fetch_systemd_boot(arch: Arch) -> Path:
    """systemd-boot's EFI program for UEFI boards: Debian's systemd-boot-efi for the architecture, unpacked
    into the cache (on amd64 the host's package has only the x86 one, and an arm64 install would clash)."""
    _fetch_packages(["systemd-boot-efi"], arch, "systemd-boot")
    return locate_systemd_boot(arch.debian)


SYSTEMD_BOOT_NAMES = {"amd64": "systemd-bootx64.efi", "arm64": "systemd-bootaa64.efi", "armhf": "systemd-bootarm.efi"}


def locate_systemd_boot(debian_arch: str) -> Path:
    path = cache_dir() / "systemd-boot" / debian_arch / "usr/lib/systemd/boot/efi" / SYSTEMD_BOOT_NAMES[debian_arch]
    if not path.is_file():
        raise PartsError(f"systemd-boot for {debian_arch} is not fetched yet: run `make deps`")
    return path


def kexec_method(kernel: KernelParts, arch: Arch) -> str:
    """How this kernel kexecs: `file` (the kexec_file_load syscall), `tools` (kexec_load, through
    kexec-tools) or `none`, from the kernel's config when its package ships one."""
    config = kernel.image.parent / f"config-{kernel.version}"
    if config.is_file():
        text = config.read_text(errors="replace")
        if "CONFIG_KEXEC_FILE=y" in text:
            return "file"
        return "tools" if "CONFIG_KEXEC=y" in text else "none"
    return "file" if arch.debian == "amd64" else "tools"


def locate_busybox(arch: Arch, dynamic: bool = False) -> Path:
    """Debian's static busybox, or (dynamic) the one linked against libc, half the size."""
    path = cache_dir() / ("busybox-dynamic" if dynamic else "busybox") / arch.debian / "bin" / "busybox"
    if not path.is_file():
        raise PartsError(f"busybox for {arch.debian} is not fetched yet ({fetch_hint()})")
    return path


def busybox_applets(busybox: Path, runner: list[str]) -> list[str]:
    """The applets this busybox was built with, as install paths (bin/sh, sbin/insmod, ...), asked of the
    binary itself (under qemu-user for another architecture)."""
    proc = run([*runner, str(busybox), "--list-full"], error=PartsError)
    return sorted(line.strip() for line in proc.stdout.splitlines() if line.strip())


def busybox_links(busybox: Path, runner: list[str]) -> list[tuple[str, str]]:
    """(relative path, relative symlink target) for every applet, e.g. ("sbin/insmod", "../bin/busybox"),
    for a busybox installed at bin/busybox."""
    links = []
    for applet in busybox_applets(busybox, runner):
        rel = applet.lstrip("/")
        if rel == "bin/busybox" or rel.startswith("linuxrc"):
            continue
        parent = rel.rsplit("/", 1)[0]
        links.append((rel, "busybox" if parent == "bin" else "../" * rel.count("/") + "bin/busybox"))
    return links
