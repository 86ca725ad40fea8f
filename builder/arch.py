"""What the builder must know about each target architecture, keyed by Debian architecture name."""

from __future__ import annotations

import os
from dataclasses import dataclass


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


ARCHES: dict[str, Arch] = {
    "amd64": Arch("amd64", "x86_64-linux-gnu", "EM_X86_64", 64, "x86_64", "qemu-x86_64-static",
                  "manylinux2014_x86_64", ""),
    "arm64": Arch("arm64", "aarch64-linux-gnu", "EM_AARCH64", 64, "aarch64", "qemu-aarch64-static",
                  "manylinux2014_aarch64", "aarch64-linux-gnu-"),
    "armhf": Arch("armhf", "arm-linux-gnueabihf", "EM_ARM", 32, "armv7l", "qemu-arm-static",
                  "linux_armv7l", "arm-linux-gnueabihf-"),
}

_HOST_BY_UNAME = {a.uname: a.debian for a in ARCHES.values()}


def get_arch(name: str) -> Arch:
    """Look up an architecture by Debian name; an unknown name is an error that lists the known ones."""
    try:
        return ARCHES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHES))}") from None


def host_arch() -> Arch:
    """The architecture of the build machine (programs for it run without qemu-user)."""
    machine = os.uname().machine
    if machine not in _HOST_BY_UNAME:
        raise RuntimeError(f"unsupported build machine {machine!r}")
    return ARCHES[_HOST_BY_UNAME[machine]]


def is_native(arch: Arch) -> bool:
    return arch.debian == host_arch().debian
