"""The boot: find the banks partition, ask overlay_layout's policy for this boot's candidates, and walk
them: mount one's squashfs read-only (verified) under an overlay with its upper/work, preflight its init,
self-test a trial; any failure moves to the next candidate. Then /userdata, and the hand-over.

Writes to the banks partition never stop a boot: a full, read-only or failing partition is a warning,
and the boot goes on with the state in memory (an upper on tmpfs if need be)."""

from __future__ import annotations

import errno
import os

from initfs import log
from initfs.blockdev import wait_for_device
from initfs.options import Options
from initfs.syscalls import MS_BIND, MS_NODEV, MS_NOSUID, MS_RDONLY, mount
from overlay_layout import durable
from overlay_layout.contract import BANKS, BOOTED, RUN, TIMELINE, InitramfsConf
from overlay_layout.errors import BankbootError
from overlay_layout.layout import Layout

TYPE_CHECKING = False  # typing costs a quarter of a second to import under TCG: only for the checker
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn, TypeVar

    from overlay_layout.nofollow import Ident
    from overlay_layout.policy import Candidate, Plan
    from overlay_layout.records import Booted, BootRecord, Chosen, Manifest, MenuEntry, Prepared, StatusImage
    from overlay_layout.state import Banks
    from overlay_layout.trust import KeySet, Policy

    T = TypeVar("T")

LOWER = f"{RUN}/lower"  # the image's squashfs
VOLATILE = f"{RUN}/volatile"  # upper/work on tmpfs when the banks partition cannot hold them
NEWROOT = "/newroot"


class BootError(BankbootError):
    pass


def device_timeout(opts: Options) -> float | None:
    """How long to wait for the banks and userdata devices: for ever with rootwait."""
    return None if opts.get("rootwait") else opts.get("bankboot.roottimeout")


def mount_banks(opts: Options) -> Layout:
    spec = opts.get("root")
    if not spec:
        raise BootError("no root= on the kernel command line: it names the banks partition "
                        "(root=/dev/vda2, root=PARTUUID=..., root=LABEL=...)")
    delay = opts.get("rootdelay")
    if delay:
        import time

        time.sleep(delay)
    with log.step(f"wait for banks partition {spec}"):
        dev = wait_for_device(spec, device_timeout(opts), "banks partition")
    fstype = opts.get("rootfstype")
    os.makedirs(BANKS, exist_ok=True)
    with log.step(f"mount {dev} on {BANKS}"):
        try:
            mount(dev, BANKS, fstype, MS_NOSUID | MS_NODEV)
        except OSError as e:
            # A write-protected card or a filesystem the kernel will only read: boot read-only.
            try:
                mount(dev, BANKS, fstype, MS_NOSUID | MS_NODEV | MS_RDONLY)
            except OSError:
                raise BootError(f"cannot mount the banks partition {dev} ({spec}) as {fstype}: {e.strerror}") from e
            log.error(f"the banks partition {dev} mounts only read-only ({e.strerror}): booting without "
                      f"recording anything; changes to the image will not persist")
    return Layout(BANKS)


def menu_entries(banks: Banks, limit: int, config: InitramfsConf) -> list[StatusImage]:
    """What the console menu offers: images signed by the keys in force (unless the initramfs accepts unsigned
    ones) and not below the anti-rollback floor; the init still verifies whatever is picked."""
    from overlay_layout.trust import signatures_of

    return [e for e in banks.status(limit)["images"] if not e["below_floor"] and not e["untrusted"]
            and (config.unsigned or signatures_of(banks.manifest(e["id"])))]


def menu_selection(opts: Options, banks: Banks, limit: int, config: InitramfsConf) -> tuple[str | None, str]:
    """bankboot.select= wins; otherwise the console prompt (ESC opens the menu)."""
    from initfs.menu import prompt, stop_listening

    select = opts.get("bankboot.select")
    if select:
        stop_listening()
        return select, "bankboot.select"
    timeout = opts.get("bankboot.timeout")
    if timeout <= 0 or opts.get("bankboot.kexec"):  # a kexec's second stage: the window was the loader's
        return None, ""

    def entries() -> list[MenuEntry]:
        """Read only when ESC was pressed: the status and the boot log cost every boot time otherwise."""
        from overlay_layout import bootlog

        last: dict[str, str] = {}
        for r in bootlog.read_log(banks.root):
            last[str(r.get("image", ""))] = str(r.get("outcome") or r.get("why", ""))
        return [{**e, "last_boot": last.get(e["id"])} for e in menu_entries(banks, limit, config)]

    with log.step("console prompt"):
        return prompt(entries, timeout, opts.get("bankboot.menu_timeout")), "console menu"


def verify_image(layout: Layout, image: str, full: bool, keys: KeySet | None = None,
                 policy: Policy | None = None) -> Manifest:
    """The image's manifest must be signed by the keys in force, enough of them (checked every boot: cheap);
    on a trial's first boot the whole squashfs and hash tree are also hashed against it. Later reads are
    checked by dm-verity. `policy`: the init's, when the caller has it already (else read here)."""
    from initfs import VERSION
    from overlay_layout.layout import LayoutError
    from overlay_layout.manifest import read_installed
    from overlay_layout.trust import Policy, TrustError

    policy = policy or Policy.load()
    path = layout.manifest_path(image)
    try:
        manifest = read_installed(layout, image)
    except OSError as e:
        raise BootError(f"cannot read {path}: {e.strerror}") from e
    except LayoutError as e:
        raise BootError(str(e)) from e
    if manifest["id"] != image:
        raise BootError(f"{path} describes image {manifest['id']}")
    try:
        with log.step("verify manifest signature"):
            who = policy.check(manifest, VERSION, keys)
    except TrustError as e:
        raise BootError(f"verification failed: {e}") from e
    manifest["_signed_by"] = who
    log.log(f"image {image}: manifest signed by {who}")
    if full:
        from initfs.modules import fast_hashing

        with log.step("the kernel's SHA-256"):
            log.log(fast_hashing())
        with log.step(f"hash {image}"):
            files = [(layout.squashfs(image), manifest["sha256"], manifest["size"])]
            if "verity" in manifest:
                files.append((layout.verity(image), manifest["verity"]["sha256"], manifest["verity"]["size"]))
            for file, want, size in files:
                got = _sha256(file, size)
                if got != want:
                    raise BootError(f"verification failed: {file} has sha256 {got}, the signed manifest says "
                                    f"{want}: the image was changed after it was signed")
    return manifest


def _sha256(path: str, size: int) -> str:
    """The sha256 of the first `size` bytes (the signed size: what dm-verity maps; bytes after it are never
    read); a shorter file is a failure."""
    from overlay_layout.hashing import ShortRead, hash_file

    try:
        return hash_file(path, size)[1]
    except ShortRead as e:
        raise BootError(f"verification failed: {path} is {e.done} bytes, shorter than the {size} the signed "
                        f"manifest says: truncated") from e
    except OSError as e:
        raise BootError(f"verification failed: cannot read {path}: {e.strerror}") from e


def _volatile(image: str) -> tuple[str, str]:
    """An upper and work directory for `image` on a tmpfs (VOLATILE), fresh for this candidate."""
    os.makedirs(VOLATILE, exist_ok=True)
    if not os.path.ismount(VOLATILE):
        mount("tmpfs", VOLATILE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    base = f"{VOLATILE}/{image}"
    durable.remove_tree_quietly(base)
    for d in ("upper", "work"):
        os.makedirs(f"{base}/{d}", exist_ok=True)
    return f"{base}/upper", f"{base}/work"


def mount_image(layout: Layout, image: str, full_check: bool = False, notes: list[str] | None = None,
                keys: KeySet | None = None, policy: Policy | None = None) -> Manifest:
    """The image's verified squashfs under an overlay on NEWROOT. A sealed image (its signed manifest has a
    persistence policy) gets a tmpfs upper here: what preflight and self-test see is the signed image alone;
    its persistent paths are mounted after them (mount_persistent). An unsealed one gets its whole-root
    upper from the banks partition. `notes`: what was repaired on the way (a planted symlink replaced)."""
    from initfs.blockdev import attach_readonly

    layout.check_image(image)
    manifest = verify_image(layout, image, full_check, keys, policy)
    squashfs = layout.squashfs(image)
    os.makedirs(LOWER, exist_ok=True)
    with log.step(f"mount {squashfs}"):
        if "verity" in manifest:
            from initfs.blockdev import VerityError, open_verity

            try:
                dev, fd = open_verity(f"bankboot-{image}", squashfs, layout.verity(image), manifest), None
            except VerityError as e:
                raise BootError(f"dm-verity: {e}") from e
        elif "signatures" in manifest or "signature" in manifest:
            raise BootError("signed but without dm-verity data: refusing to read it unchecked")
        else:
            dev, fd = attach_readonly(squashfs)
        manifest["_device"] = dev
        try:
            mount(dev, LOWER, "squashfs", MS_RDONLY | MS_NODEV)
        except OSError as e:
            raise BootError(f"cannot mount {squashfs} (through {dev}): {e.strerror}; "
                            f"the image is damaged or not a squashfs") from None
        finally:
            if fd is not None:
                os.close(fd)
    os.makedirs(NEWROOT, exist_ok=True)
    with log.step("mount overlay"):
        if "persist" in manifest:
            upper, work = _volatile(image)
            mount("overlay", NEWROOT, "overlay", 0, f"lowerdir={LOWER},upperdir={upper},workdir={work}")
            return manifest
        replaced: list[str] = []
        try:
            for name in ("backups", "utils"):
                layout.ensure_sub(image, name, replaced)
            upper, up_id = layout.ensure_sub(image, "upper", replaced)
            work, work_id = layout.ensure_sub(image, "work", replaced)
            mount_overlay(NEWROOT, LOWER, (upper, up_id), (work, work_id), 0)
        except OSError as e:
            # The banks partition cannot hold the upper (read-only, full, damaged): changes go to memory.
            log.error(f"image {image}: its overlay upper on the banks partition cannot be used ({e.strerror}); "
                      f"changes made in this boot will not persist")
            upper, work = _volatile(image)
            mount("overlay", NEWROOT, "overlay", 0, f"lowerdir={LOWER},upperdir={upper},workdir={work}")
        finally:
            report_replaced(image, replaced, notes)
    return manifest


def report_replaced(image: str, replaced: list[str], notes: list[str] | None) -> None:
    """Planted symlinks replaced on the banks partition: a warning on the console and in the boot record."""
    for r in replaced:
        log.error(f"image {image}: {r}")
        if notes is not None:
            notes.append(r)


def mount_overlay(target: str, lower: str, upper: tuple[str, Ident], work: tuple[str, Ident], flags: int) -> None:
    """An overlay with an upper and work directory walked without following links (nofollow.py). The paths
    go to the kernel as text: nothing else runs to rename anything in between (see nofollow.py), and each
    is checked to be the directory walked once mounted; when one is not, the mount is undone."""
    from overlay_layout.nofollow import same_dir

    mount("overlay", target, "overlay", flags, f"lowerdir={lower},upperdir={upper[0]},workdir={work[0]}")
    if not (same_dir(upper[0], upper[1]) and same_dir(work[0], work[1])):
        from initfs.syscalls import MNT_DETACH, umount

        umount(target, MNT_DETACH)
        raise OSError(errno.ELOOP, f"{upper[0]} or {work[0]} changed while it was mounted")


def persist_flags(allowed: tuple[str, ...]) -> int:
    """A persistent path is mounted nosuid,nodev unless its signed entry allows setuid (suid) or device
    nodes (dev): what someone writes into it offline must not become root or read the disk."""
    return (0 if "suid" in allowed else MS_NOSUID) | (0 if "dev" in allowed else MS_NODEV)


def mount_persistent(layout: Layout, image: str, persist: list[str], notes: list[str] | None = None) -> None:
    """A sealed image's persistent paths, each an overlay of the image's own directory with an upper of its
    own under overlay/<id>/upper/<path>, nosuid,nodev unless the manifest allows either. Nothing else on the
    banks partition is ever seen by the image: the upper and work directories are reached without following
    a symlink (one planted there is replaced by an empty directory, and reported), and so are the image's
    own directory and the mount point in the new root (signed, but a symlink there is refused)."""
    from overlay_layout.manifest import split_persist
    from overlay_layout.nofollow import check_dirs, sync_walked

    entries = [split_persist(entry) for entry in persist]
    # Every path's upper and work first, made durable by one syncfs before any is used (a sealed image's
    # first boot makes two directories per path: a syncfs each was a few flushes each); they are on the
    # banks partition, so nothing mounted below changes what they are. Then, in order, each mount point
    # checked (after the paths above it are mounted) and mounted.
    dirs: list[tuple[tuple[str, Ident], tuple[str, Ident]] | OSError] = []
    unsynced: list[str] = []
    for path, _ in entries:
        rel = path.lstrip("/")
        replaced: list[str] = []
        try:
            dirs.append((layout.ensure_sub(image, "upper", replaced, rel, unsynced),
                         layout.ensure_sub(image, "work", replaced, rel, unsynced)))
        except OSError as e:
            dirs.append(e)
        finally:
            report_replaced(image, replaced, notes)
    try:
        sync_walked(unsynced)
    except OSError as e:
        dirs = [e] * len(entries)
    for (path, allowed), made in zip(entries, dirs, strict=True):
        rel = path.lstrip("/")
        target, lower = f"{NEWROOT}/{rel}", f"{LOWER}/{rel}"
        try:
            check_dirs(LOWER, rel)
            check_dirs(NEWROOT, rel)
        except OSError as e:
            raise BootError(f"persistent path {path} is not a directory in the image ({e.strerror})") from e
        flags = persist_flags(allowed)
        try:
            if isinstance(made, OSError):
                raise made
            mount_overlay(target, lower, made[0], made[1], flags)
        except OSError as e:
            log.error(f"image {image}: the upper of its persistent path {path} on the banks partition cannot be "
                      f"used ({e.strerror}); changes made there in this boot will not persist")
            up, wk = _volatile(f"{image}.{rel.replace('/', '.')}")
            mount("overlay", target, "overlay", flags, f"lowerdir={lower},upperdir={up},workdir={wk}")


def repair_userdata_dir(opts: Options, layout: Layout) -> list[str]:
    """With bankboot.userdata=banks, the userdata directory made a real one before the boot record is written
    (a symlink planted in its place is replaced: the notes say so). Failures are mount_userdata's to report."""
    replaced: list[str] = []
    if opts.get("bankboot.userdata") == "banks":
        try:
            layout.ensure_userdata_dir(replaced)
        except (OSError, ValueError):
            pass
        for r in replaced:
            log.error(r)
    return replaced


def mount_userdata(opts: Options, layout: Layout) -> str:
    """/userdata in the new root. One that cannot be had is a warning and an empty tmpfs in its place: the
    image boots (and can be updated) without it. Returns what was mounted."""
    spec = opts.get("bankboot.userdata")
    target = f"{NEWROOT}/userdata"
    if not spec:
        log.log("no bankboot.userdata= on the command line: no /userdata")
        return "none"
    try:
        os.makedirs(target, exist_ok=True)
        if spec == "banks":
            from overlay_layout.nofollow import same_dir

            replaced: list[str] = []
            src, ident = layout.ensure_userdata_dir(replaced)  # repair_userdata_dir did any repair
            for r in replaced:
                log.error(r)
            mount(src, target, None, MS_BIND)  # the banks partition's nosuid,nodev carry over to the bind
            if not same_dir(src, ident):
                from initfs.syscalls import MNT_DETACH, umount

                umount(target, MNT_DETACH)
                raise OSError(errno.ELOOP, f"{src} changed while it was mounted")
            return src
        dev = wait_for_device(spec, device_timeout(opts), "userdata partition")
        try:
            mount(dev, target, opts.get("bankboot.userdatafstype"), MS_NOSUID | MS_NODEV)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
        return dev
    except Exception as e:
        log.error(f"the userdata partition ({spec}) cannot be mounted: {e}; /userdata is an empty tmpfs for this "
                  f"boot, nothing written there is kept")
        try:
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        except OSError as e2:
            log.error(f"no tmpfs on /userdata either: {e2.strerror}")
        return "tmpfs (userdata unavailable)"


def release_image(image: str) -> None:
    """Undo whatever of mount_image happened: overlay, squashfs, the verity mapping (loops clear themselves).
    Never fails: a mount that stays busy is detached, so the next candidate can use the mount points."""
    from initfs.blockdev import close_verity
    from initfs.syscalls import MNT_DETACH, umount

    for target in [*_mounts_under(NEWROOT), LOWER]:
        if os.path.ismount(target):
            try:
                umount(target)
            except OSError as e:
                log.error(f"cannot unmount {target} ({e.strerror}); detaching it")
                try:
                    umount(target, MNT_DETACH)
                except OSError:
                    pass
    try:
        close_verity(f"bankboot-{image}")
    except Exception as e:
        log.error(f"cannot remove the dm-verity mapping of {image}: {e}")
    durable.remove_tree_quietly(f"{VOLATILE}/{image}")


def _mounts_under(top: str) -> list[str]:
    """Mount points at or under `top`, deepest first."""
    try:
        with open("/proc/self/mounts") as f:
            targets = [line.split()[1] for line in f if len(line.split()) > 1]
    except OSError:
        targets = []
    under = {t for t in targets if t == top or t.startswith(top + "/")} | {top}
    return sorted(under, key=lambda t: t.count("/"), reverse=True)


def prepare(layout: Layout, image: str, init: str, trial: bool, opts: Options, config: InitramfsConf,
            boot_floor: str | None = None, keys: KeySet | None = None, policy: Policy | None = None) -> Prepared:
    """Mount the image (verified against `keys`), read its init through verity and, for a trial, self-test it."""
    from initfs.preflight import preflight, verify_ranges
    from overlay_layout.policy import below_floor

    notes: list[str] = []
    manifest = mount_image(layout, image, full_check=trial, notes=notes, keys=keys, policy=policy)
    if below_floor(manifest["version"], boot_floor):  # the signed version, checked again after the plan
        raise BootError(f"version {manifest['version']} is below the anti-rollback floor {boot_floor}")
    pinned = opts.get("bankboot.kexec")
    if manifest.get("kernel") or pinned:
        kexec = own_kernel(image, manifest, pinned, config.kexec)
        if kexec:
            return {"signed_by": manifest["_signed_by"], "kexec": kexec}
    persist = manifest.get("persist")
    checked = manifest.get("preflight")
    with log.step("preflight"):
        if checked is not None and checked["init"] == init:  # the ranges the signed manifest names
            n = verify_ranges(manifest["_device"], checked["ranges"], f"{init} or a file it needs")
            log.log(f"image {image}: {init} and the files it needs read back fine ({n >> 10} KiB of the image, "
                    f"as the signed manifest lists them)")
        else:
            n = preflight(NEWROOT, init)
            log.log(f"image {image}: {init} and the {n - 1} file(s) it needs read back fine")
    result: Prepared = {"signed_by": manifest["_signed_by"], "confirm_boots": manifest.get("confirm_boots") is True,
                        "sealed": persist is not None, "persist": persist, "notes": notes}
    if trial:
        from initfs.selftest import self_test

        with log.step("self-test"):
            result["selftest"] = self_test(NEWROOT, config.image_modules,
                                           opts.get("bankboot.selftest_timeout"))
        log.log(f"self-test of {image}: {result['selftest']}")
    if persist is not None:
        with log.step("mount persistent paths"):
            mount_persistent(layout, image, persist, notes)
        log.log(f"image {image} is sealed: only {' '.join(persist)} keep changes")
    else:
        log.log(f"image {image} is UNSEALED: its whole root keeps changes on the banks partition, including "
                f"programs (bankboot image --persist DIR seals it)")
    return result


def own_kernel(image: str, manifest: Manifest, pinned: str | None, method: str) -> str | None:
    """The loader stages the image's own kernel when it differs from the running one (returns its release);
    the second stage checks it runs on that kernel and never kexecs again."""
    from initfs.kexec import KexecError, needs_kexec, prepare_kexec

    k = manifest.get("kernel")
    if pinned:
        if k is None:
            raise BootError("this is a kexec'd kernel (bankboot.kexec=), but the image carries no kernel: "
                            "only the loader boots it")
        if needs_kexec(manifest):
            u = os.uname()
            raise BootError(f"needs its kernel {k['release']} ({k['version']}); the kexec'd kernel is {u.release} "
                            f"({u.version})")
        return None
    if k is None or not needs_kexec(manifest):
        return None
    try:
        log.log(prepare_kexec(LOWER, image, manifest, method))
    except KexecError as e:
        raise BootError(f"its kernel {k['release']}: {e}") from e
    return k["release"]


def _quietly(what: str, fn: Callable[..., T], *args: Any) -> T | None:
    """A write to the banks partition that must not stop the boot: failures are warnings."""
    from overlay_layout.state import quietly

    return quietly(log.error, what, fn, *args)


def _choose(opts: Options, config: InitramfsConf, layout: Layout, init: str) -> tuple[Chosen, Banks]:
    """This boot's image: the menu's or the command line's choice, then overlay_layout.state.walk of the
    policy's candidates, each prepared (mounted, verified, preflighted, a trial self-tested) here."""
    from overlay_layout.state import Banks, CannotBoot, walk
    from overlay_layout.trust import init_policy

    banks = Banks(BANKS)
    _quietly("removing staging leftovers", banks.remove_staging_leftovers)
    # Read once: the keys in force and every candidate's signature check use it (when it cannot be read, each
    # of them reads it again and fails as it would have).
    policy = _quietly("reading the trust policy", init_policy, config)
    keys = _quietly("reading the keys in force", trusted_keys, banks, policy)
    limit = opts.get("bankboot.unconfirmed_boots") or config.unconfirmed_boots
    try:
        select, how = menu_selection(opts, banks, limit, config)
    except Exception as e:  # the prompt is a convenience: it must never stop a boot
        log.error(f"console prompt failed ({e}); booting as planned")
        select, how = None, ""

    def step(cand: Candidate, plan: Plan) -> Prepared:
        try:
            return prepare(layout, cand.image, init, cand.trial, opts, config, plan.boot_floor, keys, policy)
        except Exception as e:
            from initfs.selftest import SelfTestError

            raise CannotBoot("self-test failed" if isinstance(e, SelfTestError) else "cannot boot it", e) from e

    chosen = walk(banks, step, select, how, limit, opts.get("bankboot.kexec"), release_image, log.log, log.error)
    return chosen, banks


def trusted_keys(banks: Banks, policy: Policy | None = None) -> KeySet:
    """The keys this boot checks images against: the initramfs's root keys advanced by the key updates the
    device committed (overlay_layout/keychain.py); the plan leaves out images they can never verify."""
    from overlay_layout.trust import Policy, boot_keys

    with log.step("keys in force"):
        keys = boot_keys(banks, policy or Policy.load())
    if keys.serial:
        log.log(f"keys in force: key update {keys.serial}, {keys.describe()}")
    return keys


def kexec_into(opts: Options, image: str, trial: bool, prepared: Prepared, record: BootRecord) -> NoReturn:
    """The loader's hand-over to an image's own kernel (staged by prepare): the boot record, the watchdog
    for a trial, everything unmounted, then the kexec. A kexec that does not start is a failed try."""
    from initfs.kexec import KexecError, execute
    from initfs.menu import stop_listening
    from initfs.rescue import reboot_now
    from initfs.syscalls import MNT_DETACH, umount
    from overlay_layout import bootlog

    record["outcome"], record["selftest"] = f"kexec into {prepared['kexec']}", "in the second stage"
    _quietly("writing the boot log", bootlog.append_record, BANKS, record)
    watchdog = opts.get("bankboot.watchdog")
    if watchdog and trial:
        from initfs.watchdog import arm, kept_across_kexec

        log.log(_quietly("arming the watchdog", arm, watchdog) or "watchdog not armed")
        if not kept_across_kexec():
            log.error("the kernel stops watchdogs at a kexec: a second kernel that hangs will not be reset "
                      "(watchdog.stop_on_reboot=0 on the loader's command line keeps it running)")
    stop_listening()
    release_image(image)
    for target in (BANKS, VOLATILE):
        if os.path.ismount(target):
            try:
                umount(target)
            except OSError:
                umount(target, MNT_DETACH)
    _quietly("writing the timeline", write_timeline)
    log.log(f"kexec: starting kernel {prepared['kexec']} for image {image}")
    try:
        execute()
    except KexecError as e:
        reboot_now(f"{e}; rebooting (the trial's try is spent)", 2.0)


def write_timeline(path: str = TIMELINE) -> None:
    """The boot's steps (log.timeline), for `bankctl timeline` and `bankboot timeline`."""
    from overlay_layout import jsontext

    log.mark("hand-over")
    with open(path, "w") as f:
        f.write(jsontext.dumps({"clock": "seconds since the kernel started (CLOCK_BOOTTIME)", "steps": log.timeline},
                               spaced=True))


def commit_loader(banks_root: str, slot: str | None) -> str:
    """A loader on trial (bankboot.loader_trial, set by the firmware) has booted far enough to choose and
    check an image: it becomes the committed one on the boot FAT (initfs/loaderab.py), so later boots start it.
    Until this runs every reset returns to the committed loader once the firmware's tries are spent."""
    from initfs.loader import BOOT, boot_partition, mount_boot
    from initfs.loaderab import bless
    from initfs.modules import load_modules, read_order
    from initfs.syscalls import umount

    if slot not in ("a", "b"):
        raise BootError(f"bankboot.loader_trial without a loader slot (bankboot.loader_slot={slot})")
    with open("/proc/filesystems") as f:
        if "vfat" not in f.read().split():
            from overlay_layout.contract import archive_path, modules_list

            load_modules(os.uname().release, read_order("/" + archive_path(modules_list("vfat"))))
    mount_boot(boot_partition(banks_root))
    try:
        done = bless(BOOT, slot)
    finally:
        os.sync()
        umount(BOOT)
    return done or f"loader {slot} was committed already"


def boot_image(opts: Options, argv: list[str], config: InitramfsConf) -> NoReturn:
    import time

    from initfs.rescue import give_up
    from initfs.switchroot import expose_kit, read_kit_list, remove_old_kits, switch_root
    from overlay_layout import bootlog

    init = opts.get("init")
    rescue = opts.get("bankboot.rescue") or config.rescue
    try:
        layout = mount_banks(opts)
    except BootError as e:
        give_up(str(e), [], rescue)
    chosen, banks = _choose(opts, config, layout, init)
    cand, why, prepared, tried, plan = chosen
    if cand is None:
        _quietly("writing the boot log", bootlog.append_record, BANKS,
                 {"time": int(time.time()), "kernel": os.uname().release, "image": None,
                  "why": "no image could be booted", "outcome": "nothing booted", "tried": tried})
        if opts.get("bankboot.kexec"):
            from initfs.rescue import reboot_now

            why = tried[-1]["error"] if tried else "nothing to boot"
            reboot_now(f"the second stage could not boot the image ({why}); rebooting to the loader, which falls "
                       f"back", 2.0)
        give_up(f"no image on {BANKS} could be booted ({len(tried)} tried)", tried, rescue)
    image, trial = cand.image, cand.trial
    if opts.get("bankboot.loader_trial"):
        log.log(_quietly("committing the loader", commit_loader, layout.root, opts.get("bankboot.loader_slot"))
                or "the loader on trial is not committed: the firmware's count goes on")
    record: BootRecord = {"time": int(time.time()), "kernel": os.uname().release, "image": image, "why": why,
                    "trial": trial, "selftest": prepared.get("selftest", "not run (not a trial)"),
                    "outcome": "trial not confirmed" if trial else "booted", "sealed": prepared.get("sealed"),
                    "build": "sealed" if config.sealed else "development (unsealed)"}
    if tried:
        record["fallback_from"] = {"image": tried[0]["image"], "reason": tried[0]["error"]}
        record["tried"] = tried
    if prepared.get("kexec"):
        kexec_into(opts, image, trial, prepared, record)
    repairs = prepared.get("notes", []) + repair_userdata_dir(opts, layout)
    removed = _quietly("removing kits from the banks partition", remove_old_kits, layout, layout.images(),
                       repairs) or []
    notes = plan.notes + [f"removed {p} (a bankctl kit on the banks partition is never run)" for p in removed]
    notes += repairs
    if notes:
        record["notes"] = "; ".join(notes)
    unconfirmed = None
    if not trial and prepared.get("confirm_boots"):
        unconfirmed = _quietly("counting this boot", banks.record_boot, image)
        record["unconfirmed_boots"] = unconfirmed
    watchdog = opts.get("bankboot.watchdog")
    if watchdog and (trial or prepared.get("confirm_boots")):
        from initfs.watchdog import arm

        log.log(_quietly("arming the watchdog", arm, watchdog) or "watchdog not armed")
    os.makedirs(RUN, exist_ok=True)
    from overlay_layout import jsontext

    booted: Booted = {"image": image, "why": why, "trial": trial, "signed_by": prepared.get("signed_by"),
                      "confirm_boots": prepared.get("confirm_boots"), "unconfirmed_boots": unconfirmed,
                      "sealed": prepared.get("sealed"), "persist": prepared.get("persist"),
                      "kernel": {"running": os.uname().release,
                                 "loader": (opts.get("bankboot.loader") or os.uname().release).split("@")[0]
                                 if opts.get("bankboot.kexec") else os.uname().release},
                      "build": record["build"], "tried": tried, "warnings": banks.warnings + repairs}
    with open(BOOTED, "w") as f:
        f.write(jsontext.dumps(booted, spaced=True))
    keep: list[str] = []
    with log.step("bankctl from the initramfs"):
        if _quietly("mounting the bankctl kit", expose_kit):
            keep = _quietly("reading the kit list", read_kit_list) or []
    log_warnings: list[str] = []
    _quietly("writing the boot log", bootlog.append_record, BANKS, record, log_warnings,
             not bootlog.is_plain(record))
    for w in log_warnings:
        log.error(w)
    with log.step("mount /userdata"):
        mount_userdata(opts, layout)
    _quietly("writing the timeline", write_timeline)
    from initfs.menu import flush_input, stop_listening

    stop_listening()  # normally closed by the prompt already
    flush_input()  # keys typed during a boot without a window (a kexec's second stage) are the boot's too
    switch_root(NEWROOT, init, argv, keep)
