"""What a kernel file is: its architecture, release and build (`uname -r` and `uname -v`), read from the file
itself, and the bytes the init hands to kexec_file_load.

Why here and not from a package name: an image carries whatever kernel its maker built, and the init
decides "same kernel, no kexec" by comparing exactly these two strings with the running kernel's
`os.uname()`. The file is stored as given (Debian's arm64 vmlinuz is a gzip-compressed Image: kexec-tools,
firmware and QEMU take it so, and the init inflates it where kexec_file_load needs the raw Image)."""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuildError
from overlay_layout.contract import ARCHES

# Architectures whose kernel has kexec_file_load (kernel, initramfs and command line by file descriptor).
KEXEC_FILE_ARCHES = tuple(a.debian for a in ARCHES if a.kexec_file_load is not None)
# "Linux version <release> (<builder>) (<compiler>) <version>": the banner every kernel carries.
_BANNER = re.compile(rb"Linux version (\S+) \(.{1,400}?\) (#\d+ [^\n\0]{1,200})")
# x86 bzImage setup header: "<release> (<builder>) <version>".
_X86_VERSION = re.compile(rb"^(\S+) \(.{1,200}?\) (#\d+ [^\0]{1,200})")


class KernelFileError(BuildError, ValueError):
    pass


@dataclass(frozen=True)
class KernelFile:
    arch: str  # Debian architecture: arm64, amd64, armhf
    release: str  # uname -r
    version: str  # uname -v, e.g. "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-01-21)"
    data: bytes  # the file as given


def read_kernel(path: Path) -> KernelFile:
    """Identify a kernel image file; KernelFileError names the file and what is wrong with it."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KernelFileError(f"cannot read kernel {path}: {e.strerror}") from None
    data = raw  # what is inspected: the inflated Image when the file is gzip-compressed
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise KernelFileError(f"{path}: a damaged gzip file ({e})") from None
    if len(data) >= 0x40 and data[0x38:0x3C] == b"ARM\x64":
        return KernelFile("arm64", *_banner(data, path), raw)
    if len(data) >= 0x210 and data[0x202:0x206] == b"HdrS":
        # The setup header points at a version string; the banner itself is inside the compressed payload.
        ptr = int.from_bytes(data[0x20E:0x210], "little") + 0x200
        m = _X86_VERSION.match(data[ptr:ptr + 512])
        if not m:
            raise KernelFileError(f"{path}: an x86 bzImage without a readable version string")
        return KernelFile("amd64", m.group(1).decode(), m.group(2).decode().strip(), raw)
    if len(data) >= 0x30 and data[0x24:0x28] == b"\x18\x28\x6f\x01":
        raise KernelFileError(f"{path}: a 32-bit ARM zImage; bankboot kexecs only arm64 and x86_64 kernels "
                              f"(32-bit ARM has no kexec_file_load)")
    raise KernelFileError(f"{path}: not a kernel image bankboot knows (an arm64 Image, gzip-compressed or not, "
                          f"or an x86_64 bzImage)")


def _banner(data: bytes, path: Path) -> tuple[str, str]:
    m = _BANNER.search(data)
    if not m:
        raise KernelFileError(f"{path}: no 'Linux version' banner in the kernel image")
    return m.group(1).decode(), m.group(2).decode().strip()
