"""The C calls Python lacks (mount, finit_module, kexec_file_load, reboot, a RTLD_GLOBAL dlopen, libsodium),
from one place: the `_bankboot` module built into the init's lean libpython (builder/bankbootmodule.c), or,
in a Python without it (a build host's, the tests'), overlay_layout/hostnative.py, the same API through
ctypes. A frozen program without `_bankboot` is a build fault, named as one: the freeze carries no ctypes
to fall back on."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout import hostnative as api
else:
    try:
        import _bankboot as api
    except ImportError:
        if getattr(sys, "frozen", False):
            raise ImportError("this program's libpython has no _bankboot module (a build fault: the init must be "
                              "frozen with builder/leanpython.py's libpython, which builds it in)") from None
        from overlay_layout import hostnative as api

__all__ = ["api"]
