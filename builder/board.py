"""Board files: everything the builder and the QEMU harness need to know about one board, read from TOML
and checked up front so a typo is reported with the file and key at fault, not as a failed boot later."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from builder.arch import Arch, get_arch
from overlay_layout.contract import DEVICE_KEY

COMPRESSIONS = ("zstd", "gzip", "xz", "lz4", "none")
DEFAULT_BOARD = "qemu-aarch64"


class BoardError(ValueError):
    pass


@dataclass(frozen=True)
class Kernel:
    package: str | None = None  # Debian package (or metapackage)
    image: Path | None = None  # own kernel: the image file
    modules_dir: Path | None = None  # own kernel: lib/modules/<version>
    version: str | None = None  # own kernel: its release (defaults to modules_dir's name)


@dataclass(frozen=True)
class Board:
    name: str
    path: Path
    description: str
    arch: Arch
    kernel: Kernel
    compression: str
    modules: tuple[str, ...]
    console: str
    cmdline: str
    qemu_system: str
    qemu_args: tuple[str, ...]
    qemu_disk: tuple[str, ...]
    # Loaded first where the kernel and CPU have them, skipped where not (the kernel refuses a module for a CPU
    # feature the board lacks): faster SHA-256 for dm-verity and module signatures (docs/initramfs.md).
    optional_modules: tuple[str, ...] = ()
    qemu_net: tuple[str, ...] = ()  # a NIC on QEMU's user-mode network (device "net0"), for tests that need one
    image_needs_modules: bool = False  # a trial image must carry /lib/modules/<release> (self-test)
    kernel_name: str = "vmlinuz"  # the kernel's file name on the boot partition
    dtb: str | None = None  # device tree, relative to the kernel package's dtb directory
    config_txt: str | None = None  # Raspberry Pi firmware config.txt for the boot partition
    power_of_two: bool = False  # the disk image size must be a power of two (QEMU's SD cards)
    serial_index: int = 0  # which QEMU -serial is the console (raspi: 1, the mini-UART)
    rescue: str = "reboot"  # when no image boots: reboot and try again (field devices), or a shell
    unconfirmed_boots: int = 3  # boots without `bankctl boot-ok` before an image that asks for it falls back
    sealed: bool = False  # a field build: no rescue shell, init= ignored (docs/trust.md)
    device_key: str = DEVICE_KEY  # where the device's key for encrypted banks is (docs/trust.md)
    network_ca: Path | None = None  # https: the CA bundle built into the initramfs (a file on the build host)
    client_cert: str = ""  # https: the device's client certificate, a path on the device (e.g. under /userdata)
    client_key: str = ""  # ... and its key
    # How the board's firmware finds the loader: "direct" (QEMU -kernel, or firmware that cannot run under
    # QEMU), "uboot" (distro boot of boot.scr) or "uefi" (systemd-boot); builder/firmware.
    firmware: str = "direct"
    uboot_watchdog: str = ""  # U-Boot commands boot.scr runs to arm the board's watchdog before any kernel
    extra: dict = field(default_factory=dict, compare=False)


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
    except tomllib.TOMLDecodeError as e:
        raise BoardError(f"{path}: not valid TOML: {e}") from None
    return parse_board(path.name.removesuffix(".toml"), path, data)


def _get(data: dict, path: Path, key: str, kind: type, default=None):
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.get(part, {})
        if not isinstance(node, dict):
            raise BoardError(f"{path}: [{part}] must be a table")
    value = node.get(parts[-1], default)
    if value is None:
        raise BoardError(f"{path}: missing required key {key!r}")
    if not isinstance(value, kind):
        raise BoardError(f"{path}: {key!r} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _str_list(data: dict, path: Path, key: str, default=None) -> tuple[str, ...]:
    value = _get(data, path, key, list, default)
    if not all(isinstance(v, str) for v in value):
        raise BoardError(f"{path}: {key!r} must be a list of strings")
    return tuple(value)


# Every key a board file may have, as table.key: anything else is a typo, reported with the nearest key.
KNOWN_KEYS = ("description", "arch", "kernel.package", "kernel.version", "kernel.image", "kernel.modules_dir",
              "initramfs.compression", "initramfs.modules", "initramfs.optional_modules",
              "boot.console", "boot.cmdline", "boot.rescue",
              "boot.unconfirmed_boots", "boot.sealed", "boot.image_needs_modules", "boot.kernel_name", "boot.dtb",
              "boot.config_txt", "boot.device_key", "boot.firmware", "boot.uboot_watchdog",
              "disk.power_of_two", "qemu.system", "qemu.args", "qemu.disk", "qemu.serial_index",
              "qemu.net", "network.ca", "network.client_cert", "network.client_key")


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
        arch = get_arch(_get(data, path, "arch", str))
    except ValueError as e:
        raise BoardError(f"{path}: {e}") from None
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
    compression = _get(data, path, "initramfs.compression", str, "zstd")
    if compression not in COMPRESSIONS:
        raise BoardError(f"{path}: initramfs.compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    rescue = _get(data, path, "boot.rescue", str, "reboot")
    if rescue not in ("reboot", "shell"):
        raise BoardError(f"{path}: boot.rescue {rescue!r} must be reboot or shell")
    unconfirmed = _get(data, path, "boot.unconfirmed_boots", int, 3)
    if not 1 <= unconfirmed <= 100:
        raise BoardError(f"{path}: boot.unconfirmed_boots must be from 1 to 100, not {unconfirmed}")
    sealed = _get(data, path, "boot.sealed", bool, False)
    from builder.firmware import FIRMWARES

    firmware = _get(data, path, "boot.firmware", str, "direct")
    if firmware not in FIRMWARES:
        raise BoardError(f"{path}: boot.firmware {firmware!r} must be one of {', '.join(FIRMWARES)}")
    network_ca = None
    if "ca" in data.get("network", {}):
        network_ca = (base / _get(data, path, "network.ca", str)).resolve()
        if not network_ca.is_file() or b"-----BEGIN CERTIFICATE-----" not in network_ca.read_bytes():
            raise BoardError(f"{path}: network.ca {network_ca} is not a file of PEM certificates")
    device_paths = {}
    for key in ("client_cert", "client_key"):
        value = _get(data, path, f"network.{key}", str, "")
        if value and not value.startswith("/"):
            raise BoardError(f"{path}: network.{key} {value!r} must be an absolute path on the device (such as "
                             f"/userdata/bankboot/device.crt)")
        device_paths[key] = value
    if bool(device_paths["client_cert"]) != bool(device_paths["client_key"]):
        raise BoardError(f"{path}: network.client_cert and network.client_key go together")
    if sealed and "rescue" in data.get("boot", {}) and rescue != "reboot":
        raise BoardError(f"{path}: boot.sealed = true has no rescue shell; boot.rescue must be reboot (or unset)")
    device_key = _get(data, path, "boot.device_key", str, DEVICE_KEY)
    if not device_key.startswith("/") or "\n" in device_key or "=" in device_key:
        raise BoardError(f"{path}: boot.device_key must be an absolute path on the device, not {device_key!r}")
    return Board(
        name=name,
        path=path,
        description=_get(data, path, "description", str, ""),
        arch=arch,
        kernel=kernel,
        compression=compression,
        modules=_str_list(data, path, "initramfs.modules", []),
        optional_modules=_str_list(data, path, "initramfs.optional_modules", []),
        console=_get(data, path, "boot.console", str),
        cmdline=_get(data, path, "boot.cmdline", str, ""),
        qemu_system=_get(data, path, "qemu.system", str),
        qemu_args=_str_list(data, path, "qemu.args"),
        qemu_disk=_str_list(data, path, "qemu.disk"),
        qemu_net=_str_list(data, path, "qemu.net", []),
        image_needs_modules=_get(data, path, "boot.image_needs_modules", bool, False),
        kernel_name=_get(data, path, "boot.kernel_name", str, "vmlinuz"),
        dtb=data.get("boot", {}).get("dtb"),
        config_txt=data.get("boot", {}).get("config_txt"),
        power_of_two=_get(data, path, "disk.power_of_two", bool, False),
        serial_index=_get(data, path, "qemu.serial_index", int, 0),
        rescue=rescue,
        unconfirmed_boots=unconfirmed,
        sealed=sealed,
        device_key=device_key,
        network_ca=network_ca,
        client_cert=device_paths["client_cert"],
        client_key=device_paths["client_key"],
        firmware=firmware,
        uboot_watchdog=_get(data, path, "boot.uboot_watchdog", str, ""),
        extra=data,
    )
