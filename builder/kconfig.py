"""What a board's kernel would mount by itself. When the file `rdinit=` names cannot be run, the kernel
mounts `root=` itself and runs `init=` from it: with a disk filesystem built in (not a module, which only
the initramfs could load), a changed command line boots whatever the card holds, past every check the
init makes. A sealed build refuses such a kernel (docs/trust.md)."""

from __future__ import annotations

import re
from pathlib import Path

from builder.parts import KernelParts

# Filesystems a card, a USB stick or a disk can carry, and the network roots (nfsroot=, cifsroot=).
ROOT_CAPABLE = ("EXT2_FS", "EXT3_FS", "EXT4_FS", "BTRFS_FS", "XFS_FS", "VFAT_FS", "MSDOS_FS", "EXFAT_FS",
                "NTFS_FS", "NTFS3_FS", "F2FS_FS", "SQUASHFS", "EROFS_FS", "ISO9660_FS", "UDF_FS", "CRAMFS",
                "ROMFS_FS", "JFS_FS", "REISERFS_FS", "NILFS2_FS", "HFS_FS", "HFSPLUS_FS", "MINIX_FS", "JFFS2_FS",
                "UBIFS_FS", "ROOT_NFS", "CIFS_ROOT")


def kernel_config(kernel: KernelParts) -> Path | None:
    """The kernel's build configuration where its package ships one (Debian's boot/config-<release>, beside
    the image), or the modules directory's build tree."""
    for path in (kernel.image.parent / f"config-{kernel.version}", kernel.modules_dir / "build" / ".config"):
        if path.is_file():
            return path
    return None


def builtin_root_filesystems(config: Path) -> list[str]:
    """The ROOT_CAPABLE options set to y (a module, =m, needs the initramfs to load it)."""
    text = config.read_text(errors="replace")
    found = {m.group(1) for m in re.finditer(r"^CONFIG_([A-Z0-9_]+)=y$", text, re.M)}
    if "ROOT_NFS" in found and "NFS_FS" not in found:
        found.discard("ROOT_NFS")
    return [o for o in ROOT_CAPABLE if o in found]
