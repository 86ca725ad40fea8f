"""The contract between the builder and the device: where the initramfs keeps bankboot's files, what
initramfs.conf says, and the architectures bankboot knows. The builder writes what this module describes
and the init and bankctl read it back through it, so the two sides cannot drift apart.

Import-light on purpose (no dataclasses, typing or enum): the init imports it before its banner, and on a
slow ARM board under TCG every imported module is milliseconds of boot.

Also the syntax of the names and versions bankboot reads from disk (is_name, split_semver ...), checked
with plain string operations: the boot path must not import `re` (it brings `enum` and `functools` and
compiles patterns, a cost every boot pays on a slow board). ASCII only: a digit is 0-9, a letter A-Z or a-z.
Here rather than in a module of its own: the init imports this one before its banner anyway."""

from __future__ import annotations

from overlay_layout.errors import BankbootError

# --- Paths on the device. The builder stores them without the leading "/" (see `rel`). ---
ETC = "/etc/bankboot"
CONF = ETC + "/initramfs.conf"  # InitramfsConf.render() output
TRUST_DIR = ETC + "/trust"  # <key id>.pub, the keys images may be signed with
KIT_LIST = ETC + "/kit"  # the initramfs paths bankctl's kit keeps (initfs/switchroot.py)
MODULES = ETC + "/modules"  # the boot's module load order; MODULES + ".<use>" each on-demand set's
OPTIONAL_MARK = "?"  # a line of MODULES that starts with it: load if the kernel takes it, skip if not
SELFTEST_DIR = ETC + "/selftest.d"  # an image's own first-boot checks (inside the image, not the initramfs)
# The device's X25519 private key for encrypted banks, where bankctl (in the booted image) reads it, unless the
# board says otherwise (boot.device_key): a file on the userdata partition (docs/trust.md).
DEVICE_KEY = "/userdata/bankboot/device.key"
NETWORK_CA = ETC + "/ca.pem"  # the board file's network.ca: the CA bundle https downloads check servers with
TLS_PIECE = "initramfs.tls"  # OpenSSL and Python's _ssl, beside initramfs.img (overlay_layout/net/tlspiece.py)
IMAGE_BOOT = "/boot/bankboot"  # an image's own kernel, its initramfs and TLS piece, inside its squashfs

RUN = "/run/bankboot"
BANKS = RUN + "/banks"  # the banks partition while the init runs and in the booted image
BOOTED = RUN + "/booted"  # what this boot booted (JSON, read by bankctl and the image's services)
TIMELINE = RUN + "/timeline.json"  # the init's steps in this boot
WATCHDOG_STATE = RUN + "/watchdog"  # the watchdog the init armed for a trial (initfs/watchdog.py)
KIT = RUN + "/kit"  # the initramfs, read-only, in the booted image
BIN = RUN + "/bin"  # bankctl (and busybox in development builds), in the booted image: links into the kit
LAUNCHER = "/bin/bankctl"  # bankctl's launcher inside the initramfs, so in the kit too (builder/launcher.py)
LOADER_SOURCE = RUN + "/loader-source"  # an image's squashfs while bankctl install-loader reads it
BOOT_MOUNT = RUN + "/boot"  # the boot partition while bankctl install-loader writes it
INHIBIT = RUN + "/inhibit"  # while it exists, bankctl poll does nothing (an application's "not now")
POLL_CONF = ETC + "/poll.conf"  # an image's channel URL and poll settings (its service reads it: docs/fleet.md)

# --- The loader A/B on the boot FAT of a disk made for firmware (builder/firmware, initfs/loaderab.py). ---
LOADER_SLOTS = ("a", "b")  # a slot is a directory: SLOT_KERNEL, SLOT_INITRD, SLOT_CMDLINE, <file>.crc32
SLOT_KERNEL = "vmlinuz"
SLOT_INITRD = "initrd.img"
SLOT_CMDLINE = "cmdline.env"  # "bb_args=<command line>" (U-Boot's env import text)
LOADER_DIR = "loader"  # U-Boot's state files, and systemd-boot's loader.conf and entries
LOADER_GOOD = "good.env"  # "bb_good=<slot>": the committed loader, written only by the OS
LOADER_TRY = "try.env"  # "bb_left=<n>\nbb_try=<slot>\n\0": a loader on trial; U-Boot rewrites it in place
LOADER_ENTRIES = LOADER_DIR + "/entries"  # systemd-boot's type #1 entries: ENTRY_PREFIX<n>-<slot>[+tries].conf
ENTRY_PREFIX = "bankboot-"


def entry_name(n: int, slot: str, tries: int | None = None) -> str:
    """A systemd-boot entry's file name: a higher n sorts first (newest loader), `+tries` is its boot counter."""
    return f"{ENTRY_PREFIX}{n}-{slot}" + (f"+{tries}" if tries is not None else "") + ".conf"


def archive_path(path: str) -> str:
    """Where a device path sits inside the initramfs archive (no leading slash)."""
    return path.lstrip("/")


def modules_list(use: str | None = None) -> str:
    """The module list for the boot (use=None) or for one on-demand use such as "vfat"."""
    return MODULES if use is None else f"{MODULES}.{use}"


# --- Architectures. ---
class Arch:
    """One architecture, as both sides need it: the names the kernel, Debian and ELF give it, where its
    ld.so lives, and the syscall numbers overlay_layout/hostnative.py calls through ctypes (the init's _bankboot
    takes them from the target's headers)."""

    __slots__ = ("debian", "elf_class", "elf_machine", "finit_module", "kexec_file_load", "ld_so", "machines",
                 "triplet")

    def __init__(self, debian: str, machines: tuple[str, ...], triplet: str, elf_machine: str, elf_class: int,
                 ld_so: str, finit_module: int, kexec_file_load: int | None) -> None:
        self.debian = debian  # Debian architecture name (package suffix, manifest "arch")
        self.machines = machines  # what `uname -m` prints on it; the first is the usual one
        self.triplet = triplet  # multiarch triplet: /lib/<triplet>
        self.elf_machine = elf_machine  # e_machine as pyelftools names it
        self.elf_class = elf_class  # 32 or 64
        self.ld_so = ld_so  # the program interpreter's usual path
        self.finit_module = finit_module  # finit_module(2) number
        self.kexec_file_load = kexec_file_load  # kexec_file_load(2) number; None where the kernel has none

    @property
    def uname(self) -> str:
        return self.machines[0]

    def __repr__(self) -> str:
        return f"Arch({self.debian})"


ARCHES: tuple[Arch, ...] = (
    Arch("amd64", ("x86_64",), "x86_64-linux-gnu", "EM_X86_64", 64, "/lib64/ld-linux-x86-64.so.2", 313, 320),
    Arch("arm64", ("aarch64",), "aarch64-linux-gnu", "EM_AARCH64", 64, "/lib/ld-linux-aarch64.so.1", 273, 294),
    # armv8l: a 64-bit ARM kernel running 32-bit userspace; armv6l: the Pi 1/Zero (same syscall table).
    Arch("armhf", ("armv7l", "armv8l", "armv6l"), "arm-linux-gnueabihf", "EM_ARM", 32, "/lib/ld-linux-armhf.so.3",
         379, None),
)


class UnknownArch(ValueError, BankbootError):
    pass


def arch_named(debian: str) -> Arch:
    """An architecture by its Debian name; an unknown name is an error listing the known ones."""
    for a in ARCHES:
        if a.debian == debian:
            return a
    raise UnknownArch(f"unknown architecture {debian!r}; known: {', '.join(a.debian for a in ARCHES)}")


def arch_of_machine(machine: str) -> Arch:
    """The architecture a `uname -m` name belongs to."""
    for a in ARCHES:
        if machine in a.machines:
            return a
    raise UnknownArch(f"machine {machine!r} is not one bankboot supports "
                      f"({', '.join(m for a in ARCHES for m in a.machines)})")


DEFAULT_UNCONFIRMED_BOOTS = 3  # boots a trial gets when the board does not say


# --- initramfs.conf: key=value lines, written by the builder, read by the init and bankctl. ---
_FLAGS = {"image_modules": ("yes", "no"), "sealed": ("yes", "no"), "unsigned": ("allowed", "refused"),
          "downgrade": ("allowed", "refused")}
_LISTS = {"trusted": ",", "libdirs": ":"}


class InitramfsConf:
    """What an initramfs was built with and for. The fields below are the one table of the file: their
    order is its line order, their defaults what a missing key reads as (an initramfs from an older
    builder); an unknown key is kept in `extra`. A bool is written as one of the two words of _FLAGS, a
    tuple joined by its _LISTS separator, an int read back only when it is a positive number."""

    board: str = ""  # the board file's name
    kernel: str = ""  # the release of the kernel it was built for (its modules)
    arch: str = ""  # Debian architecture
    console: str = ""  # the board's console device
    bankboot: str = "0.0.0"  # bankboot's version (images may require a minimum)
    init: str = "frozen"  # "frozen" (bankboot's init) or "busybox" (the baseline sh init)
    image_modules: bool = False  # images must carry the kernel's modules
    rescue: str = "reboot"  # what a boot with nothing bootable does: reboot, shell, or halt
    unconfirmed_boots: int = DEFAULT_UNCONFIRMED_BOOTS  # boots a trial gets before it falls back
    sealed: bool = False  # a field build: no shell, no init= (docs/trust.md)
    kernel_name: str = "vmlinuz"  # the kernel's file name on the boot partition
    trusted: tuple[str, ...] = ()  # ids of the keys under TRUST_DIR
    unsigned: bool = False  # unsigned images allowed (development builds only)
    downgrade: bool = False  # images below the boot floor allowed
    build: str = ""  # the frozen bundle's name
    interp: str = ""  # the bundle's ld.so, inside the initramfs (bankctl's launcher runs it)
    libdirs: tuple[str, ...] = ("/lib",)  # where the bundle's libraries are (LD_LIBRARY_PATH inside the kit)
    kexec: str = "none"  # how an image's own kernel is loaded: file (kexec_file_load), tools, none
    tls: str = ""  # sha256 of the TLS piece built with it (TLS_PIECE); empty: none
    client_cert: str = ""  # https: the device's client certificate (a path on the device)
    client_key: str = ""  # ... and its key
    threshold: int = 1  # how many of the trusted keys must sign an image (1: any one)
    device_key: str = DEVICE_KEY  # the device's decryption key for encrypted banks (a path in the booted image)

    FIELDS: tuple[str, ...]  # the names above, in order (set below the class)

    def __init__(self, extra: dict[str, str] | None = None, **values: object) -> None:
        for key, value in values.items():
            if key not in self.FIELDS:
                raise TypeError(f"InitramfsConf has no field {key!r}")
            setattr(self, key, value)
        self.extra = extra or {}

    def render(self) -> str:
        lines = []
        for key in self.FIELDS:
            value = getattr(self, key)
            if key in _FLAGS:
                value = _FLAGS[key][0 if value else 1]
            elif key in _LISTS:
                value = _LISTS[key].join(value)
            lines.append(f"{key}={value}\n")
        lines.extend(f"{k}={v}\n" for k, v in sorted(self.extra.items()))
        return "".join(lines)

    @classmethod
    def parse(cls, text: str) -> InitramfsConf:
        conf = cls()
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key.startswith("#"):
                continue
            if key not in cls.FIELDS:
                conf.extra[key] = value
            elif key in _FLAGS:
                setattr(conf, key, value == _FLAGS[key][0])
            elif key in _LISTS:
                setattr(conf, key, tuple(v for v in value.split(_LISTS[key]) if v))
            elif isinstance(getattr(cls, key), int):
                if value.isdigit() and int(value) > 0:
                    setattr(conf, key, int(value))
            else:
                setattr(conf, key, value)
        return conf

    @classmethod
    def read(cls, path: str = CONF) -> InitramfsConf:
        """The file at `path`; a missing or unreadable file reads as the defaults (sealed=False: a build
        without the file is a development one; the init then refuses every image for want of keys)."""
        try:
            with open(path) as f:
                return cls.parse(f.read())
        except OSError:
            return cls()

    def ld_so(self) -> str:
        """The ld.so bankctl's launcher runs: the one the builder found, else its architecture's (or this
        machine's) usual one."""
        if self.interp:
            return self.interp
        import os

        return (arch_named(self.arch) if self.arch else arch_of_machine(os.uname().machine)).ld_so


InitramfsConf.FIELDS = tuple(k for k in InitramfsConf.__annotations__ if k != "FIELDS")


# --- The syntax of names and versions (no `re` on the boot path). ---
DIGITS = frozenset("0123456789")
ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") | DIGITS
NAME_CHARS = ALNUM | frozenset("._+-")  # image ids, kernel releases
PATH_PART_CHARS = NAME_CHARS | frozenset("@")  # parts of a persistent path
SEMVER_ID_CHARS = ALNUM | frozenset(".-")  # pre-release and build parts of a version


def made_of(text: str, allowed: frozenset[str]) -> bool:
    """True when `text` is not empty and every character is in `allowed`."""
    return bool(text) and all(c in allowed for c in text)


def is_name(text: str, longest: int, alnum_first: bool = False) -> bool:
    """Letters, digits and . _ + -, 1 to `longest` characters; alnum_first: starting with a letter or digit."""
    return 0 < len(text) <= longest and made_of(text, NAME_CHARS) and (not alnum_first or text[0] in ALNUM)


def is_absolute_path(text: str) -> bool:
    """/a/b/c: at least one part, each of letters, digits and . _ + @ - (no empty part, no trailing /)."""
    return text.startswith("/") and all(made_of(part, PATH_PART_CHARS) for part in text[1:].split("/"))


def _number(text: str) -> int | None:
    """A version number: digits without a leading zero (0 itself is fine)."""
    if not made_of(text, DIGITS) or (len(text) > 1 and text[0] == "0"):
        return None
    return int(text)


def split_semver(text: str) -> tuple[int, int, int, str | None, str | None] | None:
    """MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] as (major, minor, patch, prerelease, build), or None."""
    main, plus, build = text.partition("+")
    if plus and not made_of(build, SEMVER_ID_CHARS):
        return None
    core, dash, pre = main.partition("-")
    if dash and not made_of(pre, SEMVER_ID_CHARS):
        return None
    parts = core.split(".")
    if len(parts) != 3:
        return None
    numbers = [_number(p) for p in parts]
    if None in numbers:
        return None
    major, minor, patch = numbers
    assert major is not None and minor is not None and patch is not None
    return major, minor, patch, pre if dash else None, build if plus else None
