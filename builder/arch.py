"""What the builder must know about each target architecture, keyed by Debian architecture name. The
facts the device shares (names, ELF machine, ld.so, syscalls) come from overlay_layout.contract; this
module adds the host-side tools that build for it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from builder.errors import BuildError
from overlay_layout import contract


@dataclass(frozen=True)
class Arch:
    debian: str  # Debian architecture name (package suffix)
    triplet: str  # multiarch triplet: /lib/<triplet>
    elf_machine: str  # pyelftools e_machine name
    elf_class: int  # 32 or 64
    uname: str  # what `uname -m` prints on a board of this arch
    qemu_user: str  # qemu-user binary that runs its programs on the host
    pyinstaller_platform: str  # wheel platform tag for `pip download`
    cross_prefix: str  # binutils prefix ("" for the host's own)
    oci_platform: tuple[str, str]  # an OCI image's (architecture, variant) for it

    @property
    def device(self) -> contract.Arch:
        """The facts the device side knows about this architecture."""
        return contract.arch_named(self.debian)


# Host-side tools per architecture: qemu-user binary, wheel platform, binutils prefix.
# The OCI platform: Go's GOARCH and, for 32-bit ARM, the variant (Debian's armhf is ARMv7, hard float).
_TOOLS = {"amd64": ("qemu-x86_64-static", "manylinux2014_x86_64", "", ("amd64", "")),
          "arm64": ("qemu-aarch64-static", "manylinux2014_aarch64", "aarch64-linux-gnu-", ("arm64", "")),
          "armhf": ("qemu-arm-static", "linux_armv7l", "arm-linux-gnueabihf-", ("arm", "v7"))}

ARCHES: dict[str, Arch] = {a.debian: Arch(a.debian, a.triplet, a.elf_machine, a.elf_class, a.uname, *_TOOLS[a.debian])
                           for a in contract.ARCHES}


def get_arch(name: str) -> Arch:
    """Look up an architecture by Debian name; an unknown name is an error that lists the known ones."""
    return ARCHES[contract.arch_named(name).debian]


def host_arch() -> Arch:
    """The architecture of the build machine (programs for it run without qemu-user)."""
    try:
        return ARCHES[contract.arch_of_machine(os.uname().machine).debian]
    except contract.UnknownArch as e:
        raise BuildError(f"unsupported build machine: {e}") from e


def is_native(arch: Arch) -> bool:
    return arch.debian == host_arch().debian
