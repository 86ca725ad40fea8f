"""Loading the kernel modules the builder put into the initramfs, in the order it worked out from
modules.dep (/etc/bankboot/modules: one path per line, relative to /lib/modules/<release>)."""

from __future__ import annotations

import errno
import os

from initfs import log
from initfs.syscalls import MODULE_INIT_COMPRESSED_FILE, finit_module
from overlay_layout.contract import MODULES, OPTIONAL_MARK
from overlay_layout.errors import BankbootError

ORDER_FILE = MODULES


class ModuleLoadError(BankbootError):
    pass


def read_order(path: str = ORDER_FILE) -> list[str]:
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


def fast_hashing(root: str = "") -> str:
    """Hash with the kernel from now on (its crypto socket: the on-demand set `hash`, loaded from `root`, the
    initramfs or bankctl's kit); returns a line saying with what, for the log."""
    from overlay_layout import hashing
    from overlay_layout.contract import modules_list

    if hashing.accelerated():
        return "hashing with OpenSSL or the kernel already"
    try:
        load_modules(os.uname().release, read_order(f"{root}{modules_list('hash')}"), root)
    except ModuleLoadError as e:
        return f"hashing with Python's SHA-256: {e}"
    why = hashing.use_kernel()
    if why is not None:
        return f"hashing with Python's SHA-256: {why}"
    from overlay_layout.kernelhash import implementation

    return f"hashing with the kernel's SHA-256 ({implementation() or 'its best driver'})"


def load_modules(release: str, order: list[str], root: str = "") -> int:
    """Load each module once; one that is already loaded (or built in) is fine. Returns how many were
    loaded. A module that fails is an error naming it and the kernel's reason. `root`: another tree holding
    lib/modules (bankctl loads on-demand modules from its kit)."""
    base = f"{root}/lib/modules/{release}"
    if order and not os.path.isdir(base):
        present = ", ".join(sorted(os.listdir(f"{root}/lib/modules"))) if os.path.isdir(f"{root}/lib/modules") \
            else "none"
        raise ModuleLoadError(f"this initramfs has no modules for the running kernel {release} "
                              f"(it has: {present}); it was built for another kernel")
    loaded = 0
    for line in order:
        optional = line.startswith(OPTIONAL_MARK)
        rel = line.removeprefix(OPTIONAL_MARK)
        path = f"{base}/{rel}"
        flags = MODULE_INIT_COMPRESSED_FILE if not rel.endswith(".ko") else 0
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ModuleLoadError(f"cannot open module {path}: {e.strerror}") from e
        try:
            finit_module(fd, "", flags)
            loaded += 1
            if log.debug:
                log.log(f"loaded {rel}")
        except OSError as e:
            if optional and e.errno != errno.EEXIST:  # e.g. ENODEV: this CPU lacks the feature it is for
                if log.debug:
                    log.log(f"optional module {rel} not loaded: {e.strerror}")
            elif e.errno != errno.EEXIST:
                raise ModuleLoadError(f"loading module {path} failed: {e.strerror} (see dmesg)") from e
        finally:
            os.close(fd)
    return loaded
