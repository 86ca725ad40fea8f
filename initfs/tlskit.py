"""Where bankctl finds the kit's TLS piece (overlay_layout/net/tlspiece.py) the first time it fetches an
https URL. The piece is not in the initramfs (no boot pays for it); it lies beside the initramfs the
device booted: on the boot partition (`initramfs.tls` beside `initramfs.img`), or, for an image that
brings its own kernel and initramfs, in that image at /boot/bankboot/initramfs.tls. Either copy is used
only when its sha256 is the one in the kit's initramfs.conf (the kit is the initramfs itself, in RAM), so
neither place needs to be trusted. The boot partition is mounted read-only for the read and unmounted."""

from __future__ import annotations

import os

from overlay_layout.contract import BOOT_MOUNT, IMAGE_BOOT, TLS_PIECE, InitramfsConf, archive_path, modules_list
from overlay_layout.net.errors import TlsError
from overlay_layout.net.tlspiece import PieceError, digest, install, unpack

MAX_PIECE = 32 << 20


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_PIECE)
    except OSError:
        return None


def _from_boot_partition(banks_root: str, kit: str, want: str = "") -> tuple[str, bytes | None]:
    """The piece at the FAT's root (bankboot disk) or in a loader slot (bankctl install-loader on a disk with
    two): the one whose sha256 is `want`, else the root's."""
    from initfs.loader import LoaderError, boot_partition
    from initfs.modules import load_modules, read_order
    from initfs.syscalls import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, mount, umount

    try:
        dev = boot_partition(banks_root)
    except (LoaderError, OSError) as e:
        return f"the boot partition ({e})", None
    try:
        with open("/proc/filesystems") as f:
            if "vfat" not in f.read().split():
                load_modules(os.uname().release, read_order(os.path.join(kit, archive_path(modules_list("vfat")))),
                             root=kit)
        os.makedirs(BOOT_MOUNT, exist_ok=True)
        mount(dev, BOOT_MOUNT, "vfat", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except (OSError, RuntimeError) as e:
        return f"{dev} (cannot mount it: {e})", None
    try:
        for name in (f"a/{TLS_PIECE}", f"b/{TLS_PIECE}"):
            data = _read(os.path.join(BOOT_MOUNT, name))
            if data is not None and want and digest(data) == want:
                return f"{dev}:{name}", data
        return f"{dev}:{TLS_PIECE}", _read(os.path.join(BOOT_MOUNT, TLS_PIECE))
    finally:
        umount(BOOT_MOUNT)


def load_tls(conf: InitramfsConf, banks_root: str, kit: str, image_root: str = "/") -> None:
    """Load the TLS piece that belongs to this kit into this process, or say why there is none."""
    if not conf.tls:
        raise TlsError("this initramfs was built without the TLS piece, so this bankctl cannot fetch https URLs "
                       "(rebuild it with this bankboot: `bankboot initramfs` writes initramfs.tls beside it)",
                       "no-tls")
    tried = []
    in_image = os.path.join(image_root, IMAGE_BOOT.lstrip("/"), TLS_PIECE)

    def image_copy() -> tuple[str, bytes | None]:
        return f"{in_image} in the running image", _read(in_image)

    def boot_copy() -> tuple[str, bytes | None]:
        return _from_boot_partition(banks_root, kit, conf.tls)

    for place in (image_copy, boot_copy):
        where, data = place()
        if data is None:
            tried.append(f"none at {where}")
            continue
        if digest(data) != conf.tls:
            tried.append(f"{where} is another build's (sha256 {digest(data)[:16]}...)")
            continue
        try:
            install(unpack(data, conf.tls, where)[1])
        except (PieceError, OSError) as e:
            raise TlsError(f"cannot load the TLS piece {where}: {e}", "no-tls") from e
        return
    raise TlsError(f"this bankctl's TLS piece ({TLS_PIECE}, sha256 {conf.tls[:16]}...) is not on this device: "
                   f"{'; '.join(tried)}. Put the {TLS_PIECE} built with this initramfs beside it on the boot "
                   f"partition (bankboot disk does)", "no-tls")
