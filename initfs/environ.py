"""The environment our children get. PyInstaller's onedir bootloader re-execs itself with
LD_LIBRARY_PATH pointing into its bundle and keeps the caller's value as LD_LIBRARY_PATH_ORIG; anything
we start (busybox, the image's init) must see the environment the kernel gave us, not the bundle's."""

from __future__ import annotations

import os

DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def clean_environ(env: dict[str, str] | None = None) -> dict[str, str]:
    src = dict(os.environ if env is None else env)
    out: dict[str, str] = {}
    for key, value in src.items():
        if key.endswith("_ORIG"):
            continue
        if key.startswith(("_PYI", "_MEI", "PYINSTALLER_")):
            continue
        out[key] = value
    for key, value in src.items():
        if key.endswith("_ORIG"):
            base = key.removesuffix("_ORIG")
            out[base] = value
    # A variable PyInstaller set that had no original value must go altogether.
    for key in ("LD_LIBRARY_PATH",):
        if key + "_ORIG" not in src:
            out.pop(key, None)
    out.setdefault("PATH", DEFAULT_PATH)
    return out
