"""Board files: everything the builder and the QEMU harness need to know about one board, read from TOML
and checked up front so a typo is reported with the file and key at fault, not as a failed boot later."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from builder.arch import Arch, get_arch
from builder.errors import BuildError
from overlay_layout.contract import DEFAULT_UNCONFIRMED_BOOTS, DEVICE_KEY

COMPRESSIONS = ("zstd", "gzip", "xz", "lz4", "none")
DEFAULT_BOARD = "qemu-aarch64"


class BoardError(BuildError, ValueError):
    pass


@dataclass(frozen=True)
class Kernel:
    package: str | None = None  # Debian package (or metapackage)
    image: Path | None = None  # own kernel: the image file
    modules_dir: Path | None = None  # own kernel: lib/modules/<version>
    version: str | None = None  # own kernel: its release (defaults to modules_dir's name)


@dataclass(frozen=True)
class Board:
    """A board file, read. The keys that set a field, their types and defaults are SETTINGS's; parse_board
    checks the values and makes the fields no one key sets (arch, kernel, network_ca)."""

    name: str
    path: Path
    description: str
    arch: Arch
    kernel: Kernel
    compression: str
    modules: tuple[str, ...]
    # Loaded first where the kernel and CPU have them, skipped where not (the kernel refuses a module for a CPU
    # feature the board lacks): faster SHA-256 for dm-verity and module signatures (docs/initramfs.md).
    optional_modules: tuple[str, ...]
    console: str
    cmdline: str
    rescue: str  # when no image boots: reboot and try again (field devices), or a shell
    unconfirmed_boots: int  # boots without `bankctl boot-ok` before an image that asks for it falls back
    sealed: bool  # a field build: no rescue shell, init= ignored (docs/trust.md)
    image_needs_modules: bool  # a trial image must carry /lib/modules/<release> (self-test)
    kernel_name: str  # the kernel's file name on the boot partition
    dtb: str | None  # device tree, relative to the kernel package's dtb directory
    config_txt: str | None  # Raspberry Pi firmware config.txt for the boot partition
    device_key: str  # where the device's key for encrypted banks is (docs/trust.md)
    # How the board's firmware finds the loader: "direct" (QEMU -kernel, or firmware that cannot run under
    # QEMU), "uboot" (distro boot of boot.scr) or "uefi" (systemd-boot); builder/firmware.
    firmware: str
    # Whether Linux can kexec on this board: not where the firmware starts the other CPUs through a spin table
    # (the Raspberry Pis' armstub), from which Linux cannot take them back (docs/boards.md).
    kexec: bool
    uboot_watchdog: str  # U-Boot commands boot.scr runs to arm the board's watchdog before any kernel
    power_of_two: bool  # the disk image size must be a power of two (QEMU's SD cards)
    qemu_system: str
    qemu_args: tuple[str, ...]
    qemu_disk: tuple[str, ...]
    serial_index: int  # which QEMU -serial is the console (raspi: 1, the mini-UART)
    qemu_net: tuple[str, ...]  # a NIC on QEMU's user-mode network (device "net0"), for tests that need one
    network_ca: Path | None  # https: the CA bundle built into the initramfs (a file on the build host)
    client_cert: str  # https: the device's client certificate, a path on the device (e.g. under /userdata)
    client_key: str  # ... and its key
    extra: dict = field(default_factory=dict, compare=False)


REQUIRED = object()  # the default of a key every board file must have


class Setting:
    """One key of a board file: `key` (table.key in the TOML), the Board field it sets (None: parse_board
    makes a field from it), its type (list: a list of strings, read as a tuple) and its default."""

    def __init__(self, key: str, field: str | None, kind: type, default: object = REQUIRED) -> None:
        self.key, self.field, self.kind, self.default = key, field, kind, default


# Every key a board file may have, in the order an unknown key's error lists them: anything else is a typo,
# reported with the nearest key (check_keys).
SETTINGS = (
    Setting("description", "description", str, ""),
    Setting("arch", None, str),
    Setting("kernel.package", None, str, None),
    Setting("kernel.version", None, str, None),
    Setting("kernel.image", None, str, None),
    Setting("kernel.modules_dir", None, str, None),
    Setting("initramfs.compression", "compression", str, "zstd"),
    Setting("initramfs.modules", "modules", list, []),
    Setting("initramfs.optional_modules", "optional_modules", list, []),
    Setting("boot.console", "console", str),
    Setting("boot.cmdline", "cmdline", str, ""),
    Setting("boot.rescue", "rescue", str, "reboot"),
    Setting("boot.unconfirmed_boots", "unconfirmed_boots", int, DEFAULT_UNCONFIRMED_BOOTS),
    Setting("boot.sealed", "sealed", bool, False),
    Setting("boot.image_needs_modules", "image_needs_modules", bool, False),
    Setting("boot.kernel_name", "kernel_name", str, "vmlinuz"),
    Setting("boot.dtb", "dtb", str, None),
    Setting("boot.config_txt", "config_txt", str, None),
    Setting("boot.device_key", "device_key", str, DEVICE_KEY),
    Setting("boot.firmware", "firmware", str, "direct"),
    Setting("boot.kexec", "kexec", bool, True),
    Setting("boot.uboot_watchdog", "uboot_watchdog", str, ""),
    Setting("disk.power_of_two", "power_of_two", bool, False),
    Setting("qemu.system", "qemu_system", str),
    Setting("qemu.args", "qemu_args", list),
    Setting("qemu.disk", "qemu_disk", list),
    Setting("qemu.serial_index", "serial_index", int, 0),
    Setting("qemu.net", "qemu_net", list, []),
    Setting("network.ca", None, str, None),
    Setting("network.client_cert", "client_cert", str, ""),
    Setting("network.client_key", "client_key", str, ""),
)
KNOWN_KEYS = tuple(s.key for s in SETTINGS)
_BY_KEY = {s.key: s for s in SETTINGS}


def board_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("builder.boards").iterdir()
                  if p.name.endswith(".toml"))


def load_board(name_or_path: str) -> Board:
    """A board by name (builder/boards/NAME.toml) or by the path of the user's own TOML file."""
    candidate = Path(name_or_path)
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        path = candidate
        if not path.is_file():
            raise BoardError(f"board file {path} does not exist")
    else:
        path = Path(str(resources.files("builder.boards").joinpath(f"{name_or_path}.toml")))
        if not path.is_file():
            raise BoardError(f"unknown board {name_or_path!r}; known boards: {', '.join(board_names())} "
                             f"(or give the path of a board .toml file)")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BoardError(f"{path}: not valid TOML: {e}") from e
    return parse_board(path.name.removesuffix(".toml"), path, data)


def setting(data: dict, path: Path, key: str):
    """The value of `key` in a board file, of its Setting's type; its default when absent (an error naming
    the key when it has none)."""
    s = _BY_KEY[key]
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.get(part, {})
        if not isinstance(node, dict):
            raise BoardError(f"{path}: [{part}] must be a table")
    value: Any = node.get(parts[-1], s.default)
    if value is REQUIRED:
        raise BoardError(f"{path}: missing required key {key!r}")
    if value is None:
        return None
    if not isinstance(value, s.kind):
        raise BoardError(f"{path}: {key!r} must be a {s.kind.__name__}, not {type(value).__name__}")
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise BoardError(f"{path}: {key!r} must be a list of strings")
        return tuple(value)
    return value


def check_keys(data: dict, path: Path) -> None:
    """Refuse keys the builder does not read: a misspelt one would otherwise be silently ignored."""
    import difflib

    found = []
    for key, value in data.items():
        if isinstance(value, dict) and any(k.startswith(f"{key}.") for k in KNOWN_KEYS):
            found += [f"{key}.{sub}" for sub in value]
        else:
            found.append(key)
    for key in found:
        if key not in KNOWN_KEYS:
            near = difflib.get_close_matches(key, KNOWN_KEYS, 1, 0.6)
            hint = f"; did you mean {near[0]}?" if near else f" (known keys: {', '.join(KNOWN_KEYS)})"
            raise BoardError(f"{path}: unknown key {key!r}{hint}")


def parse_board(name: str, path: Path, data: dict) -> Board:
    check_keys(data, path)
    try:
        arch = get_arch(setting(data, path, "arch"))
    except ValueError as e:
        raise BoardError(f"{path}: {e}") from e
    kern = data.get("kernel", {})
    if not isinstance(kern, dict):
        raise BoardError(f"{path}: [kernel] must be a table")
    base = path.parent

    def own_path(key: str) -> Path | None:
        value = kern.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise BoardError(f"{path}: kernel.{key} must be a string")
        return (base / value).resolve()

    for key in ("package", "version"):
        if key in kern and not isinstance(kern[key], str):
            raise BoardError(f"{path}: kernel.{key} must be a string")
    kernel = Kernel(package=kern.get("package"), image=own_path("image"), modules_dir=own_path("modules_dir"),
                    version=kern.get("version"))
    if kernel.package is None and (kernel.image is None or kernel.modules_dir is None):
        raise BoardError(f"{path}: [kernel] needs either `package` (a Debian kernel package) or both "
                         f"`image` and `modules_dir` (your own kernel)")
    if kernel.package is not None and (kernel.image or kernel.modules_dir):
        raise BoardError(f"{path}: [kernel] has both `package` and `image`/`modules_dir`: pick one")
    compression = setting(data, path, "initramfs.compression")
    if compression not in COMPRESSIONS:
        raise BoardError(f"{path}: initramfs.compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    rescue = setting(data, path, "boot.rescue")
    if rescue not in ("reboot", "shell"):
        raise BoardError(f"{path}: boot.rescue {rescue!r} must be reboot or shell")
    unconfirmed = setting(data, path, "boot.unconfirmed_boots")
    if not 1 <= unconfirmed <= 100:
        raise BoardError(f"{path}: boot.unconfirmed_boots must be from 1 to 100, not {unconfirmed}")
    sealed = setting(data, path, "boot.sealed")
    from builder.firmware import FIRMWARES

    firmware = setting(data, path, "boot.firmware")
    if firmware not in FIRMWARES:
        raise BoardError(f"{path}: boot.firmware {firmware!r} must be one of {', '.join(FIRMWARES)}")
    network_ca = None
    if "ca" in data.get("network", {}):
        network_ca = (base / setting(data, path, "network.ca")).resolve()
        if not network_ca.is_file() or b"-----BEGIN CERTIFICATE-----" not in network_ca.read_bytes():
            raise BoardError(f"{path}: network.ca {network_ca} is not a file of PEM certificates")
    device_paths = {}
    for key in ("client_cert", "client_key"):
        value = setting(data, path, f"network.{key}")
        if value and not value.startswith("/"):
            raise BoardError(f"{path}: network.{key} {value!r} must be an absolute path on the device (such as "
                             f"/userdata/bankboot/device.crt)")
        device_paths[key] = value
    if bool(device_paths["client_cert"]) != bool(device_paths["client_key"]):
        raise BoardError(f"{path}: network.client_cert and network.client_key go together")
    if sealed and "rescue" in data.get("boot", {}) and rescue != "reboot":
        raise BoardError(f"{path}: boot.sealed = true has no rescue shell; boot.rescue must be reboot (or unset)")
    device_key = setting(data, path, "boot.device_key")
    if not device_key.startswith("/") or "\n" in device_key or "=" in device_key:
        raise BoardError(f"{path}: boot.device_key must be an absolute path on the device, not {device_key!r}")
    checked = {"compression": compression, "rescue": rescue, "unconfirmed_boots": unconfirmed, "sealed": sealed,
               "firmware": firmware, "device_key": device_key, **device_paths}
    fields = {s.field: checked[s.field] if s.field in checked else setting(data, path, s.key)
              for s in SETTINGS if s.field}
    return Board(name=name, path=path, arch=arch, kernel=kernel, network_ca=network_ca, extra=data, **fields)
