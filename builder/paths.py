"""Where bankboot keeps things on the build host, one owner for each place:

- the cache (`cache_dir`): Debian kernels, busybox, target Python sysroots, frozen inits. `--cache DIR`
  (which sets $BANKBOOT_CACHE), else $BANKBOOT_CACHE, else the checkout's build/cache when bankboot runs
  from a source checkout (so `make` and `.venv/bin/bankboot` share one), else
  $XDG_CACHE_HOME/bankboot (~/.cache/bankboot), as mkosi and pip keep theirs.
- outputs nobody named (`build_dir`: the default initramfs path, bench and faults reports): $BANKBOOT_BUILD,
  else the checkout's build/, else ./build in the working directory.
- bankboot's own Python sources that go into the frozen init (`package_root`): wherever the installed
  packages are, a checkout or a wheel's site-packages."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV = "BANKBOOT_CACHE"
BUILD_ENV = "BANKBOOT_BUILD"


def checkout() -> Path | None:
    """The source checkout bankboot runs from (an editable install), or None when it is installed."""
    return PACKAGE_ROOT if (PACKAGE_ROOT / "pyproject.toml").is_file() and (PACKAGE_ROOT / "builder").is_dir() \
        else None


def package_root() -> Path:
    """The directory holding the builder, initfs and overlay_layout packages."""
    return PACKAGE_ROOT


def build_dir() -> Path:
    if os.environ.get(BUILD_ENV):
        return Path(os.environ[BUILD_ENV]).resolve()
    root = checkout()
    return (root / "build") if root else Path("build").resolve()


def cache_dir() -> Path:
    """Downloads, unpacked packages and frozen inits: kept across builds, safe to delete."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).resolve()
    root = checkout()
    if root is not None:
        return root / "build" / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).resolve() / "bankboot"


def set_cache_dir(path: Path) -> None:
    """`--cache DIR`: for this process and the tools it starts."""
    os.environ[CACHE_ENV] = str(path.resolve())


def fetch_hint() -> str:
    """What to do when a part is not in the cache."""
    return f"the cache {cache_dir()} lacks it: run `bankboot deps` (`make deps` in a checkout), or give --cache"


def default_initramfs_path(board_name: str) -> Path:
    """build/<board>/initramfs.img: where `bankboot initramfs` (and `make initramfs`) writes a board's
    initramfs when no -o is given, and where the commands that boot one look for it."""
    return build_dir() / board_name / "initramfs.img"
