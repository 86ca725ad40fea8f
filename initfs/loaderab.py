"""The loader A/B on a boot FAT made for firmware (builder/firmware writes it): two loader slots /a and /b, each
a kernel and a bankboot initramfs, and the firmware's own one-shot try of the new one.

    uboot  /loader/good.env names the committed slot; /loader/try.env ("bb_left=<n>\\nbb_try=<slot>\\n\\0")
           arms a try: boot.scr decrements it in place before each attempt and, once it is 0 (or the slot's
           files fail their CRC-32), boots the good slot again
    uefi   systemd-boot's boot counting: the new slot's entry is written last as bankboot-<n>-<slot>+<tries>.conf
           (sorted before the old one); the firmware renames it +<left>-<done> before each attempt and sorts an
           entry with no tries left after the others

install_slot writes the new pair beside the running one, the arm last; bless (by the init, once the new loader
booted an image) makes it the default. Every write is a new file fsynced and renamed, the directory fsynced
(overlay_layout/durable.py); what FAT still leaves open is in docs/firmware.md. Import-light: the init
imports this only when the command line says a loader is on trial."""

from __future__ import annotations

import os

from overlay_layout import durable
from overlay_layout.contract import (
    ENTRY_PREFIX,
    LOADER_DIR,
    LOADER_ENTRIES,
    LOADER_GOOD,
    LOADER_SLOTS,
    LOADER_TRY,
    SLOT_CMDLINE,
    SLOT_INITRD,
    SLOT_KERNEL,
    entry_name,
)
from overlay_layout.errors import BankbootError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_TRIES = 3
SLOT_OPTION = "bankboot.loader_slot"
TRIAL_OPTION = "bankboot.loader_trial"


class LoaderABError(BankbootError):
    pass


def firmware_on(root: str) -> str:
    """Which firmware the mounted boot FAT at `root` was made for: uboot, uefi, or direct (one kernel and
    initramfs at its root, no A/B)."""
    if os.path.isfile(os.path.join(root, "boot.scr")):
        return "uboot"
    if os.path.isdir(os.path.join(root, LOADER_ENTRIES)):
        return "uefi"
    return "direct"


def read_env(path: str) -> dict[str, str]:
    """U-Boot env-import text (name=value lines, maybe NUL-terminated); {} when missing or unreadable."""
    try:
        with open(path, "rb") as f:
            text = f.read(4096).split(b"\0", 1)[0].decode("ascii", "replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def _slot_ok(slot: str) -> str:
    return slot if slot in LOADER_SLOTS else LOADER_SLOTS[0]


def good_slot(root: str) -> str:
    """The committed slot: what boot.scr boots when nothing is on trial (a when good.env is unreadable)."""
    return _slot_ok(read_env(os.path.join(root, LOADER_DIR, LOADER_GOOD)).get("bb_good", ""))


def other(slot: str) -> str:
    return LOADER_SLOTS[1] if slot == LOADER_SLOTS[0] else LOADER_SLOTS[0]


def parse_entries(names: list[str]) -> list[tuple[int, str, int | None, int | None, str]]:
    """Our systemd-boot entries among file names, newest first: (n, slot, tries left or None, tries done or
    None, file name)."""
    out = []
    for name in names:
        if not (name.startswith(ENTRY_PREFIX) and name.endswith(".conf")):
            continue
        stem = name[len(ENTRY_PREFIX):-len(".conf")]
        base, _, counter = stem.partition("+")
        n_text, _, slot = base.partition("-")
        if not n_text.isdigit() or slot not in LOADER_SLOTS:
            continue
        left = done = None
        if counter:
            l_text, _, d_text = counter.partition("-")
            left = int(l_text) if l_text.isdigit() else 0
            done = int(d_text) if d_text.isdigit() else 0
        out.append((int(n_text), slot, left, done, name))
    return sorted(out, key=lambda e: (e[0], e[4]), reverse=True)


def entries(root: str) -> list[tuple[int, str, int | None, int | None, str]]:
    try:
        return parse_entries(os.listdir(os.path.join(root, LOADER_ENTRIES)))
    except OSError:
        return []


def status(root: str) -> dict[str, Any]:
    """What the boot FAT says about the two loaders (bankctl loader)."""
    kind = firmware_on(root)
    st: dict[str, Any] = {"firmware": kind}
    if kind == "uboot":
        st["good"] = good_slot(root)
        t = read_env(os.path.join(root, LOADER_DIR, LOADER_TRY))
        if t.get("bb_try") in LOADER_SLOTS:
            st["trial"] = {"slot": t["bb_try"], "tries_left": int(t.get("bb_left", "0") or 0)
                           if t.get("bb_left", "0").isdigit() else 0}
    elif kind == "uefi":
        es = entries(root)
        blessed = [e for e in es if e[2] is None]
        st["good"] = blessed[0][1] if blessed else LOADER_SLOTS[0]
        counted = [e for e in es if e[2] is not None]
        if counted:
            st["trial"] = {"slot": counted[0][1], "tries_left": counted[0][2], "tries_done": counted[0][3]}
        st["entries"] = [e[4] for e in es]
    st["slots"] = {s: sorted(os.listdir(os.path.join(root, s))) if os.path.isdir(os.path.join(root, s)) else []
                   for s in LOADER_SLOTS}
    return st


def slot_cmdline(root: str, slot: str) -> str:
    """The command line a slot boots with (without what the firmware adds: the slot, the trial flag)."""
    if firmware_on(root) == "uboot":
        return read_env(os.path.join(root, slot, SLOT_CMDLINE)).get("bb_args", "")
    for _, s, _, _, name in entries(root):
        if s != slot:
            continue
        with open(os.path.join(root, LOADER_ENTRIES, name)) as f:
            for line in f:
                if line.startswith("options "):
                    return " ".join(w for w in line.split()[1:]
                                    if w != TRIAL_OPTION and not w.startswith(SLOT_OPTION + "="))
    return ""


def crc32_bytes(path: str) -> bytes:
    """The CRC-32 of the file as written (read back), big-endian then little-endian: boot.cmd takes either."""
    import zlib

    crc = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            crc = zlib.crc32(block, crc)
    crc &= 0xFFFFFFFF
    return crc.to_bytes(4, "big") + crc.to_bytes(4, "little")


def _disarm(root: str, kind: str, slot: str) -> None:
    """Make sure no firmware will boot `slot` before its new files are complete."""
    if status(root).get("good") == slot:
        raise LoaderABError(f"loader slot {slot} is the committed one: refusing to overwrite it")
    if kind == "uboot":
        durable.remove(os.path.join(root, LOADER_DIR, LOADER_TRY))
    else:
        for _, s, _, _, name in entries(root):
            if s == slot:
                durable.remove(os.path.join(root, LOADER_ENTRIES, name))


def install_slot(root: str, slot: str, write_file: Any, files: list[tuple[str, str]], cmdline: str,
                 tries: int = DEFAULT_TRIES) -> list[str]:
    """Write the new loader into `slot` (not the committed one) and arm a try of it. files: (kernel or
    initramfs source, SLOT_KERNEL or SLOT_INITRD); write_file(src, dest) copies and checks one file into dest
    (a new file, fsynced). The arm (try.env, or the counted entry) is written last: a power cut anywhere
    before it leaves the committed loader the only one the firmware boots."""
    kind = firmware_on(root)
    if kind == "direct":
        raise LoaderABError("the boot partition has no loader slots (a disk made with --firmware direct)")
    if not 1 <= tries <= 9:
        raise LoaderABError(f"--tries {tries}: from 1 to 9 (boot.scr counts in one hex digit)")
    done = []
    _disarm(root, kind, slot)
    d = os.path.join(root, slot)
    durable.make_dirs(d)
    for name in os.listdir(d):  # the old pair of this slot (never booted again: disarmed above)
        if name.endswith(".crc32"):
            durable.remove(os.path.join(d, name))
    for src, name in files:
        tmp = os.path.join(d, f".{name}.new")
        write_file(src, tmp)
        durable.checkpoint(f"install {slot}/{name}")
        os.replace(tmp, os.path.join(d, name))
        durable.fsync_dir(d)
        done.append(f"{slot}/{name} <- {os.path.getsize(os.path.join(d, name))} bytes")
    durable.write_file(os.path.join(d, SLOT_CMDLINE), f"bb_args={cmdline}\n".encode())
    for _, name in files:  # the CRCs last: a slot whose files were cut short never verifies
        durable.write_file(os.path.join(d, f"{name}.crc32"), crc32_bytes(os.path.join(d, name)))
    if kind == "uboot":
        # exactly the bytes U-Boot's `env export -t` writes back, so its in-place rewrites never change the size
        durable.write_file(os.path.join(root, LOADER_DIR, LOADER_TRY), f"bb_left={tries}\nbb_try={slot}\n\0".encode())
        done.append(f"{LOADER_DIR}/{LOADER_TRY}: loader {slot} on trial, {tries} tries")
    else:
        n = max((e[0] for e in entries(root)), default=0) + 1
        name = entry_name(n, slot, tries)
        text = (f"title bankboot loader {slot}\nlinux /{slot}/{SLOT_KERNEL}\ninitrd /{slot}/{SLOT_INITRD}\n"
                f"options {cmdline} {SLOT_OPTION}={slot} {TRIAL_OPTION}\n")
        durable.write_file(os.path.join(root, LOADER_ENTRIES, name), text.encode())
        done.append(f"{LOADER_ENTRIES}/{name}: loader {slot} on trial, {tries} tries")
    return done


def bless(root: str, slot: str) -> str | None:
    """The loader in `slot` booted an image: make it the committed one (what every later boot starts).
    Returns what was done, None when there was nothing to do."""
    kind = firmware_on(root)
    if kind == "uboot":
        try_path = os.path.join(root, LOADER_DIR, LOADER_TRY)
        if good_slot(root) == slot and not os.path.exists(try_path):
            return None
        durable.write_file(os.path.join(root, LOADER_DIR, LOADER_GOOD), f"bb_good={slot}\n".encode())
        durable.remove(try_path)
        return f"loader {slot} committed ({LOADER_DIR}/{LOADER_GOOD})"
    if kind == "uefi":
        for n, s, left, _, name in entries(root):
            if s != slot or left is None:
                continue
            path = os.path.join(root, LOADER_ENTRIES, name)
            with open(path) as f:
                text = f.read().replace(f" {TRIAL_OPTION}", "")
            # the blessed entry is written beside the counted one, then the counted one goes: at every instant
            # one of them names the slot (systemd-bless-boot renames, which FAT does not make atomic)
            durable.write_file(os.path.join(root, LOADER_ENTRIES, entry_name(n, slot)), text.encode())
            durable.remove(path)
            return f"loader {slot} committed ({LOADER_ENTRIES}/{entry_name(n, slot)})"
    return None
