"""bankctl: the device-side tool, run in the booted image (/run/bankboot/bin/bankctl). It is the frozen
program's second entry point and changes state only through overlay_layout.

Exit codes (stable): overlay_layout/errors.py's EXIT_CODES, as docs/lifecycle.md lists them; an error's
class says which it ends a command with."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from initfs import VERSION
from initfs.loaderab import DEFAULT_TRIES as LOADER_TRIES
from overlay_layout import bootlog
from overlay_layout.contract import (
    BANKS,
    BOOTED,
    CONF,
    INHIBIT,
    RUN,
    TIMELINE,
    InitramfsConf,
    archive_path,
    modules_list,
)
from overlay_layout.errors import EXIT_ERROR, EXIT_OK, EXIT_STAGE, EXIT_USAGE, BankbootError, verdict
from overlay_layout.layout import DEFAULT_TRIES, POINTERS
from overlay_layout.lock import lock_banks
from overlay_layout.manifest import describe_persist
from overlay_layout.state import TRIAL, Banks, StateError
from overlay_layout.trust import Policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from overlay_layout.records import Booted, BootedKernel
    from overlay_layout.trust import KeySet

def run_path(args: argparse.Namespace, path: str) -> str:
    """A path under the init's run directory (contract.RUN; main's `run_dir`, which tests move)."""
    return str(args.run_dir) + path.removeprefix(RUN)


def kit_root() -> str:
    """The root of the kit this bankctl runs from: the initramfs, read-only on /run/bankboot/kit. Taken from
    where the frozen program itself lives (PyInstaller's bundle directory), never from the environment or a
    writable file, so the trust policy below is the one the device booted with."""
    bundle = getattr(sys, "_MEIPASS", None)
    return os.path.dirname(bundle) if bundle else "/"


def policy() -> Policy:
    """The trust settings of the initramfs this bankctl came from (its /etc/bankboot)."""
    return Policy.load(kit_root())


def keys_in_force(banks: Banks, pol: Policy | None = None) -> KeySet:
    """The keys in force on this device (the kit's root keys advanced by the committed key updates); banks
    then knows which images they can never verify (status, rollback)."""
    keys = (pol or policy()).in_force(banks)
    banks.untrusted = keys.refusal
    return keys


def booted_info(args: argparse.Namespace) -> Booted:
    """What the init wrote at this boot's hand-over ({} when it is missing or unreadable)."""
    path = run_path(args, BOOTED)
    try:
        with open(path) as f:
            info: Booted = json.load(f)
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def kit_conf() -> InitramfsConf:
    """The initramfs.conf of the kit this bankctl came from."""
    return InitramfsConf.read(os.path.join(kit_root(), archive_path(CONF)))


def unconfirmed_limit() -> int:
    """The board's limit, from the kit's initramfs.conf."""
    return kit_conf().unconfirmed_boots


def cmd_status(banks: Banks, args: argparse.Namespace) -> int:
    pol = policy()
    keys = keys_in_force(banks, pol)
    status: dict[str, Any] = {**banks.status(unconfirmed_limit())}  # with what bankctl adds to it
    status["booted"] = booted = booted_info(args)
    plan = status["plan"]
    status["next_boot"] = plan[0] if plan else {"image": None, "why": "nothing on the banks partition can boot"}
    status["trust"] = {"keys": sorted(keys.keys), "threshold": keys.threshold, "serial": keys.serial,
                       "retired": keys.retired, "root_keys": sorted(pol.keys), "root_threshold": pol.root.threshold,
                       "unsigned_allowed": pol.allow_unsigned, "downgrade_allowed": pol.allow_downgrade,
                       "floor": status["floor"], "boot_floor": status["boot_floor"], "sealed_build": pol.sealed}
    running = booted.get("image")
    for img in status["images"]:
        if img["id"] == running and not img["sealed"]:
            status["warnings"].append(f"the running image {running} is UNSEALED: its whole root keeps changes on "
                                      f"the banks partition, programs included (bankboot image --persist seals it)")
    if not pol.sealed:
        status["warnings"].append("development build of bankboot (unsealed): init= is obeyed and a failed boot can "
                                  "give a root shell (bankboot initramfs --sealed for devices you ship)")
    for w in booted.get("warnings", []):
        if w not in status["warnings"]:
            status["warnings"].append(f"at boot: {w}")
    if pol.allow_unsigned:
        status["warnings"].insert(0, "THIS DEVICE ACCEPTS UNSIGNED IMAGES (initramfs built with "
                                     "--insecure-allow-unsigned): anyone who can write a bank file can run code here")
    from initfs.poll import status_of

    status.update(status_of(banks.root))
    from initfs.hawkbit import status_of as hawkbit_status

    status["hawkbit"] = hawkbit_status(banks.root)
    if args.json:
        print(json.dumps(status, indent=1, sort_keys=True))
        return EXIT_OK
    b = booted
    if b:
        print(f"booted: {b.get('image')} ({b.get('why')})")
        k: BootedKernel | dict[str, str] = b.get("kernel") or {}
        if k:
            how = "the loader's" if k.get("running") == k.get("loader") else \
                f"the image's own, kexec'd by the loader's {k.get('loader')}"
            print(f"kernel: {k.get('running')} ({how})")
        for t in b.get("tried", []):
            print(f"  not booted this time: {t['image']} ({t['why']}): {t['error']}")
    print(f"{'IMAGE':<28} {'VERSION':<12} {'STATE':<7} {'TRIES':>5}  {'SEALED':<8} {'KERNEL':<22} POINTERS")
    for img in status["images"]:
        tries = "" if img["tries"] is None or img["state"] != TRIAL else str(img["tries"])
        extra = f"  ({img['reason']})" if img.get("reason") else ""
        extra += "  (reset at next boot)" if img.get("reset_pending") else ""
        extra += f"  ({img['unconfirmed_boots']} unconfirmed boots)" if img.get("unconfirmed_boots") else ""
        extra += f"  (never boots: {img['untrusted']})" if img.get("untrusted") else ""
        sealed = "yes" if img["sealed"] else "NO"
        kernel = img.get("kernel") or "(the loader's)"
        print(f"{img['id']:<28} {img['version'] or '?':<12} {img['state']:<7} {tries:>5}  {sealed:<8} {kernel:<22} "
              f"{','.join(img['pointers'])}{extra}")
    for img in status["images"]:
        if img.get("persist"):
            print(f"  {img['id']} keeps changes only in {describe_persist(img['persist'])}")
    order = ", then ".join(f"{c['image']} ({c['why']})" for c in plan[:3]) or "nothing"
    print(f"next boot: {order}")
    t = status["trust"]
    rotated = f" (key update {t['serial']}; the initramfs's own: {', '.join(t['root_keys'])})" if t["serial"] else ""
    retired = f"; retired: {', '.join(sorted(t['retired']))}" if t["retired"] else ""
    print(f"trusted keys: {keys.describe() if keys.keys else 'none'}{rotated}{retired}; version floor: "
          f"{t['floor'] or 'none'} (boots nothing below {t['boot_floor'] or 'none'}); "
          f"{'sealed' if t['sealed_build'] else 'development'} build")
    last = status["poll"]
    if last:
        print(f"last poll: {last.get('checked_utc')} {last.get('url')}: {last.get('result')}")
    hb = status["hawkbit"]
    if hb:
        action = hb.get("action") or {}
        told = f"; action {action.get('id')} ({action.get('version')}): {action.get('phase')}" + \
            (f", reported closed {action.get('report')}" if action.get("reported") else "") if action else ""
        print(f"last rollout-server poll: {_when(hb.get('checked'))} {hb.get('server')}: {hb.get('result')}{told}")
    for w in status["warnings"]:
        print(f"WARNING: {w}" if "UNSIGNED" in w else f"warning: {w}")
    return EXIT_OK


class Progress:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last = -1
        self.first: int | None = None

    def __call__(self, done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct == self.last or (not self.tty and pct % 10 and done != total):
            return
        self.last = pct
        if self.first is None:
            self.first = done  # resumed: what was there already is not this run's rate
        rate = (done - self.first) / max(time.monotonic() - self.start, 1e-6)
        left = f", {(total - done) / rate:.0f} s left" if rate > 0 and done < total else ""
        bar = "#" * (pct // 4)
        end = "" if self.tty and done != total else "\n"
        sys.stderr.write(f"\rstaging [{bar:<25}] {pct:3d}% {done / 1e6:.1f}/{total / 1e6:.1f} MB "
                         f"{rate / 1e6:.1f} MB/s{left}{end}")
        sys.stderr.flush()


def cmd_stage(banks: Banks, args: argparse.Namespace) -> int:
    from initfs.modules import fast_hashing

    booted = booted_info(args).get("image")
    if getattr(sys, "frozen", False):
        # every byte staged is hashed: the kernel's SHA-256 where it can; which one is said, as a slow stage's
        # first suspect
        print(f"bankctl stage: {fast_hashing(kit_root())}", file=sys.stderr)
    if "://" in args.file:
        m, line = _stage_url(banks, args, booted)  # the network stage: only `stage URL` imports it
        print(f"fetched: {line}")
    else:
        from overlay_layout.stage import stage

        m = stage(banks, args.file, policy(), VERSION, tries=args.tries, upper=args.upper, progress=Progress(),
                  allow_downgrade=args.allow_downgrade, booted=booted)
    print(f"staged {m['id']} (version {m['version']}, {m['_signed_by']}) as next, on trial with {args.tries} "
          f"tries; reboot to try it")
    if m.get("_keys"):
        print(f"{m['_keys']}: in force once this image is committed (mark-good)")
    return EXIT_OK


def network_settings(banks: Banks, args: argparse.Namespace, ddi: bool = False) -> Any:
    """The transport.Settings of `stage URL` and `poll`: the command line's, then the board file's (TLS).
    `ddi`: --token-file holds a hawkBit target (or, with --gateway-token, gateway) token."""
    from overlay_layout.contract import NETWORK_CA
    from overlay_layout.net.bearer import BearerAuth, TokenError
    from overlay_layout.net.download import DownloadError
    from overlay_layout.net.tls import TlsOptions
    from overlay_layout.net.transport import Settings

    conf, kit = kit_conf(), kit_root()

    def say(line: str) -> None:
        sys.stderr.write(f"\n{line}\n")

    def load_tls() -> None:
        from initfs.tlskit import load_tls

        load_tls(conf, banks.root, kit)

    built_in_ca = os.path.join(kit, archive_path(NETWORK_CA))
    tls = TlsOptions(ca=args.ca or (built_in_ca if os.path.isfile(built_in_ca) else None),
                     cert=args.cert or conf.client_cert or None, key=args.key or conf.client_key or None,
                     load=load_tls)
    try:
        if ddi:
            from overlay_layout.net.ddi import DdiAuth

            auth: BearerAuth = DdiAuth(args.token_file, "GatewayToken" if args.gateway_token else "TargetToken")
        else:
            auth = BearerAuth(args.token_file)
    except TokenError as e:
        raise DownloadError(str(e), False) from e
    return Settings(connect_timeout=args.connect_timeout, timeout=args.timeout, retries=args.retries, tls=tls,
                    say=say, auth=auth)


def _stage_url(banks: Banks, args: argparse.Namespace, booted: str | None) -> tuple[Any, str]:
    from overlay_layout.net.download import stage_url

    settings = network_settings(banks, args)
    m, stats = stage_url(banks, args.file, policy(), VERSION, tries=args.tries, upper=args.upper,
                         progress=Progress(), allow_downgrade=args.allow_downgrade, booted=booted, settings=settings,
                         whole_file=args.whole_file, **({} if args.gap is None else {"gap": args.gap}))
    return m, stats.line(m)


def cmd_poll(banks: Banks, args: argparse.Namespace) -> int:
    """The channel at URL, once or every --every (initfs/poll.py, pollcmd.py); it takes the lock itself."""
    from initfs.poll import Device, Options
    from initfs.pollcmd import run_poll

    conf, pol, booted = kit_conf(), policy(), booted_info(args)
    inhibit = (run_path(args, INHIBIT), *args.inhibit)
    if args.hawkbit:
        return _poll_hawkbit(banks, args, conf, pol, booted, inhibit)
    if args.tenant or args.controller_id or args.gateway_token:
        print("bankctl poll: --tenant, --controller-id and --gateway-token are for a rollout server (--hawkbit URL)",
              file=sys.stderr)
        return EXIT_USAGE
    opts = Options(args.url, args.tries, args.upper, args.reboot, args.download_only, inhibit, args.channel)

    def make_device() -> Device:
        fresh = Banks(banks.root)
        return Device(fresh, pol, conf.board, VERSION, booted, network_settings(fresh, args))

    return run_poll(make_device, opts, args, Progress())


def _poll_hawkbit(banks: Banks, args: argparse.Namespace, conf: InitramfsConf, pol: Policy, booted: Booted,
                  inhibit: tuple[str, ...]) -> int:
    """`bankctl poll --hawkbit URL`: a hawkBit-DDI server (initfs/hawkbit.py)."""
    from initfs.hawkbit import Options as DdiOptions
    from initfs.hawkbit import hawkbit_once
    from initfs.identity import device_id
    from initfs.poll import Device, PollFailed
    from initfs.pollcmd import run_poll

    if args.download_only or args.channel:
        print("bankctl poll --hawkbit: no --channel or --download-only (the server's action decides)",
              file=sys.stderr)
        return EXIT_USAGE
    controller = args.controller_id or device_id()
    if not controller:
        print("bankctl poll --hawkbit: give --controller-id (this device has no /etc/machine-id or serial to name "
              "it by)", file=sys.stderr)
        return EXIT_USAGE
    try:
        opts = DdiOptions(args.url, args.tenant or "DEFAULT", controller, args.tries, args.upper, args.reboot,
                          inhibit, args.hw_revision)
    except PollFailed as e:
        print(f"bankctl poll: {e}", file=sys.stderr)
        return EXIT_USAGE

    def make_device() -> Device:
        fresh = Banks(banks.root)
        return Device(fresh, pol, conf.board, VERSION, booted, network_settings(fresh, args, ddi=True))

    return run_poll(make_device, opts, args, Progress(), once=hawkbit_once)


def cmd_apply(banks: Banks, args: argparse.Namespace) -> int:
    from initfs.pollcmd import run_apply
    from overlay_layout.net.downloaded import apply

    def stage_download() -> Any:
        return apply(banks, policy(), VERSION, tries=args.tries, upper=args.upper,
                     booted=booted_info(args).get("image"))

    with lock_banks(banks.root, exclusive=True):
        m = stage_download()
    return run_apply(lambda: m, args)


def cmd_mark_good(banks: Banks, args: argparse.Namespace) -> int:
    from overlay_layout.keychain import commit

    booted = booted_info(args).get("image")
    image, change = commit(banks, policy(), booted)
    from initfs.watchdog import disarm

    disarm()
    bootlog.set_outcome(banks.root, "marked good")
    print(f"{image} is good and current")
    if change:
        print(f"{change}: in force now")
    for w in banks.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return EXIT_OK


def cmd_boot_ok(banks: Banks, args: argparse.Namespace) -> int:
    image = banks.boot_ok(booted_info(args).get("image"))
    if not booted_info(args).get("trial"):
        # A trial's watchdog is for mark-good to disarm: an image that comes up but never commits is reset.
        from initfs.watchdog import disarm

        disarm()
        bootlog.set_outcome(banks.root, "up (boot-ok)")
    print(f"{image}: boot confirmed")
    return EXIT_OK


def cmd_mark_bad(banks: Banks, args: argparse.Namespace) -> int:
    image = banks.mark_bad(None, args.reason)
    bootlog.set_outcome(banks.root, f"marked bad: {args.reason}")
    print(f"{image} is marked bad ({args.reason}); current boots next time")
    return EXIT_OK


def cmd_rollback(banks: Banks, args: argparse.Namespace) -> int:
    keys_in_force(banks)  # an image the keys in force cannot verify would not boot: rollback refuses it
    image = banks.rollback()
    print(f"{image} (previous) boots next time and becomes current")
    return EXIT_OK


def cmd_reset(banks: Banks, args: argparse.Namespace) -> int:
    image = booted_info(args).get("image") or banks.layout.pointer("current")
    if image is None:
        raise StateError("no running or current image to reset")
    banks.request_reset(image, args.keep_backup)
    kept = " (the old one kept in backups/)" if args.keep_backup else ""
    print(f"{image}: its changes (the overlay upper) are emptied at the next boot{kept}; /userdata is kept")
    return EXIT_OK


def cmd_gc(banks: Banks, args: argparse.Namespace) -> int:
    removed = banks.gc(booted_info(args).get("image"))
    print("removed: " + (", ".join(removed) if removed else "nothing"))
    return EXIT_OK


def cmd_timeline(banks: Banks, args: argparse.Namespace) -> int:
    """The init's steps in this boot (/run/bankboot/timeline.json), in seconds since the kernel started."""
    path = run_path(args, TIMELINE)
    try:
        with open(path) as f:
            steps = json.load(f)["steps"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"bankctl timeline: cannot read {path}: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(steps, indent=1))
        return EXIT_OK
    print(f"{'START':>9} {'END':>9} {'TOOK':>9}  STEP (seconds since the kernel started)")
    for s in steps:
        took = float(s["end"]) - float(s["start"])
        print(f"{float(s['start']):9.3f} {float(s['end']):9.3f} {took * 1000:7.1f}ms  {s['step']}")
    return EXIT_OK


def cmd_log(banks: Banks, args: argparse.Namespace) -> int:
    warnings: list[str] = []
    records = list(reversed(bootlog.read_log(banks.root, warnings)))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(records, indent=1, sort_keys=True))
        return EXIT_OK
    for r in records:
        print(f"{_when(r.get('time'))}  {r.get('image')}  {r.get('why')}  self-test: {r.get('selftest')}  "
              f"outcome: {r.get('outcome')}  previous boot: {r.get('previous_boot', '-')}")
        for t in r.get("tried", []):
            print(f"    not booted: {t.get('image')} ({t.get('why')}): {t.get('error')}")
        if r.get("notes"):
            print(f"    {r['notes']}")
    return EXIT_OK


def cmd_install_loader(banks: Banks, args: argparse.Namespace) -> int:
    from initfs.loader import SOURCE, LoaderError, boot_partition, install_loader, mount_source
    from initfs.modules import load_modules, read_order
    from initfs.syscalls import umount
    from overlay_layout.manifest import read_installed
    from overlay_layout.state import GOOD
    from overlay_layout.trust import TrustError

    layout = banks.layout
    image = layout.pointer(args.image) if args.image in POINTERS else args.image
    if image is None or image not in layout.images():
        raise LoaderError(f"no image {args.image} on the banks partition")
    manifest = read_installed(layout, image)
    try:
        pol = policy()
        who = pol.check(manifest, VERSION, keys_in_force(banks, pol))
    except TrustError as e:
        raise LoaderError(f"image {image}: {e}") from e
    if "initramfs" not in manifest.get("kernel", {}):
        raise LoaderError(f"image {image} carries no kernel and initramfs of its own (bankboot image --kernel)")
    if banks.image_state(banks.load(), image).get("state") != GOOD:
        raise LoaderError(f"image {image} is not committed (good): a loader must have booted before; boot it on "
                          f"trial and mark it good first")
    kit = kit_root()
    fat = read_order(os.path.join(kit, archive_path(modules_list("vfat"))))
    with open("/proc/filesystems") as f:
        if not fat and "vfat" not in f.read().split():
            raise LoaderError("this initramfs carries no FAT modules (its kernel's modules in the image had none) "
                              "and vfat is not built into the kernel: cannot write the boot partition")
    load_modules(os.uname().release, fat, root=kit)
    boot = args.boot or boot_partition(banks.root)
    mount_source(layout.squashfs(image))
    try:
        lines = install_loader(SOURCE, manifest, boot, kit_conf().kernel_name, args.tries)
    finally:
        umount(SOURCE)
    for line in lines:
        print(line)
    print(f"the loader is now kernel {manifest['kernel']['release']} with the initramfs of image {image} ({who}); "
          f"images on that kernel boot without a kexec")
    return EXIT_OK


def _load_fat() -> None:
    from initfs.modules import load_modules, read_order

    with open("/proc/filesystems") as f:
        if "vfat" in f.read().split():
            return
    kit = kit_root()
    load_modules(os.uname().release, read_order(os.path.join(kit, archive_path(modules_list("vfat")))), root=kit)


def cmd_loader(banks: Banks, args: argparse.Namespace) -> int:
    from initfs.loader import BOOT, boot_partition, mount_boot
    from initfs.loaderab import status
    from initfs.syscalls import umount

    _load_fat()
    boot = args.boot or boot_partition(banks.root)
    mount_boot(boot, readonly=True)
    try:
        st = status(BOOT)
    finally:
        umount(BOOT)
    from initfs.cmdline import Cmdline

    cmd = Cmdline.from_proc()
    st["booted"] = {"slot": cmd.get("bankboot.loader_slot"), "trial": cmd.has("bankboot.loader_trial")}
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True))
        return EXIT_OK
    if st["firmware"] == "direct":
        print(f"{boot}: one loader (a disk made for direct boot: no loader slots, no fallback)")
        return EXIT_OK
    print(f"{boot}: {st['firmware']}, committed loader {st['good']}; booted loader {st['booted']['slot'] or '?'}")
    if "trial" in st:
        t = st["trial"]
        print(f"loader {t['slot']} on trial, {t['tries_left']} tries left")
    return EXIT_OK


def _when(stamp: object) -> str:
    """A record's time, whatever a damaged log holds there."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(stamp)))  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError, OSError):
        return "(no time)          "


def add_network_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--timeout", type=float, default=20.0, help="URL: seconds an answer's header may take, and in "
                                                                "which a body must bring 1 KiB, before a retry "
                                                                "(default 20)")
    s.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="URL: seconds to connect (TCP and TLS) before a retry (default 10)")
    s.add_argument("--retries", type=int, default=5, help="URL: retries in a row of a failed request, with backoff, "
                                                          "before giving up (default 5)")
    s.add_argument("--ca", metavar="FILE", help="https: the CA bundle (PEM) servers are checked against (default: "
                                                "the board file's network.ca, else the running image's "
                                                "/etc/ssl/certs/ca-certificates.crt)")
    s.add_argument("--cert", metavar="FILE", help="https: this device's client certificate (PEM; default: the board "
                                                  "file's network.client_cert)")
    s.add_argument("--key", metavar="FILE", help="https: the client certificate's key (PEM, unencrypted; default: "
                                                 "the board file's network.client_key, else in --cert)")
    s.add_argument("--token-file", metavar="FILE",
                   help="URL: a registry's bearer token, read from FILE, sent to the URL's server only (default: an "
                        "anonymous token from the registry's token service, when it asks for one)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bankctl", description="bankboot's device-side tool")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("status", help="images, versions, states; what boots next and why")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("stage", help="copy in a bank file, verify it, make it next on trial")
    s.add_argument("file", help="a bank file, a block device holding one, or the http:// URL of one (resumes an "
                                "interrupted download; takes the chunks this device already holds from its images), "
                                "such as the blob URL `bankboot publish --oci` prints for a registry")
    s.add_argument("--tries", type=int, default=DEFAULT_TRIES, help=f"trial boots before the image is given up "
                                                                  f"(default {DEFAULT_TRIES})")
    s.add_argument("--upper", choices=["copy", "fresh"], default="copy",
                   help="start the new image with a copy of current's changes (default) or with none")
    s.add_argument("--allow-downgrade", action="store_true",
                   help="accept a version below the anti-rollback floor, where the initramfs allows it")
    add_network_options(s)
    s.add_argument("--whole-file", action="store_true",
                   help="URL: from a server without byte ranges, download the whole file even when only a small "
                        "part is missing")
    s.add_argument("--gap", type=int, metavar="BYTES",
                   help="URL: fetch two runs of missing chunks in one request when at most this many bytes lie "
                        "between them (default 64 KiB; 0: never)")
    s.set_defaults(func=cmd_stage)
    s = sub.add_parser("poll", help="check a channel (bankboot publish) and stage what it offers: once, or --every "
                                    "DURATION (docs/fleet.md)")
    s.add_argument("url", help="the channel document's URL (http:// or https://.../<channel>.json), or with "
                              "--hawkbit the rollout server's")
    s.add_argument("--hawkbit", action="store_true",
                   help="URL is a hawkBit-DDI rollout server (hawkBit, goosebit), not a channel: poll its controller "
                        "API; --token-file is then the device's target token (docs/hawkbit.md)")
    s.add_argument("--tenant", help="--hawkbit: the tenant (default DEFAULT)")
    s.add_argument("--controller-id", metavar="ID", help="--hawkbit: this device's controller id (default: its "
                                                         "device id, as bankctl status shows it)")
    s.add_argument("--gateway-token", action="store_true",
                   help="--hawkbit: --token-file holds the tenant's gateway token, not the device's target token")
    s.add_argument("--hw-revision", default="default", metavar="REV",
                   help="--hawkbit: the hardware revision sent to the server (default 'default'; bankboot publish "
                        "--format swu --hw-revision)")
    s.add_argument("--every", metavar="DURATION", help="poll in a loop, this far apart (30s, 15m, 6h, 1d), with "
                                                       "random jitter; for a service")
    s.add_argument("--jitter", type=float, default=0.2, metavar="FRACTION",
                   help="with --every: each wait is the interval +- this fraction of it, at random (default 0.2)")
    s.add_argument("--reboot", action="store_true", help="reboot into the trial once it is staged")
    s.add_argument("--reboot-command", default="reboot", metavar="CMD",
                   help="how --reboot reboots (default: reboot)")
    s.add_argument("--download-only", action="store_true",
                   help="stop once the download is complete and verified; `bankctl apply` stages it later")
    s.add_argument("--inhibit", action="append", default=[], metavar="FILE",
                   help=f"do nothing while FILE exists (repeatable; {INHIBIT} always counts)")
    s.add_argument("--channel", metavar="NAME", help="the channel the document must be for (default: its file "
                                                     "name, NAME.json)")
    s.add_argument("--tries", type=int, default=DEFAULT_TRIES, help=f"trial boots before the image is given up "
                                                                  f"(default {DEFAULT_TRIES})")
    s.add_argument("--upper", choices=["copy", "fresh"], default="copy",
                   help="start the new image with a copy of current's changes (default) or with none")
    add_network_options(s)
    s.set_defaults(func=cmd_poll, own_lock=True)
    s = sub.add_parser("apply", help="make the download `poll --download-only` completed next on trial "
                                     "(no network needed)")
    s.add_argument("--reboot", action="store_true", help="reboot into the trial once it is staged")
    s.add_argument("--reboot-command", default="reboot", metavar="CMD", help="how --reboot reboots (default: "
                                                                               "reboot)")
    s.add_argument("--tries", type=int, default=DEFAULT_TRIES, help=f"trial boots before the image is given up "
                                                                  f"(default {DEFAULT_TRIES})")
    s.add_argument("--upper", choices=["copy", "fresh"], default="copy",
                   help="start the new image with a copy of current's changes (default) or with none")
    s.set_defaults(func=cmd_apply, own_lock=True)
    s = sub.add_parser("mark-good", help="the running trial is healthy: commit it")
    s.set_defaults(func=cmd_mark_good)
    s = sub.add_parser("boot-ok", help="the running image is up: confirm this boot (images that ask for it "
                                        "fall back after several boots without one)")
    s.set_defaults(func=cmd_boot_ok)
    s = sub.add_parser("mark-bad", help="give up the trial now")
    s.add_argument("--reason", default="marked bad by bankctl", help="recorded in the state and shown by status")
    s.set_defaults(func=cmd_mark_bad)
    s = sub.add_parser("rollback", help="boot previous next time (it becomes current once it boots)")
    s.set_defaults(func=cmd_rollback)
    s = sub.add_parser("reset", help="factory reset: empty the running image's overlay upper at next boot")
    s.add_argument("--keep-backup", action="store_true", help="keep the old upper in the image's backups/")
    s.set_defaults(func=cmd_reset)
    s = sub.add_parser("gc", help="remove images that are neither previous, current nor next")
    s.set_defaults(func=cmd_gc)
    s = sub.add_parser("install-loader", help="make an image's own kernel and initramfs the loader on the boot "
                                              "partition: into the other loader slot, on trial until it has booted "
                                              "an image (disks made for U-Boot or UEFI; docs/firmware.md)")
    s.add_argument("image", help="a committed image with a kernel: its id, or current/previous")
    s.add_argument("--boot", metavar="DEVICE", help="the boot partition (default: partition 1 of the banks disk)")
    s.add_argument("--tries", type=int, default=LOADER_TRIES,
                   help=f"boots the firmware gives the new loader (default {LOADER_TRIES})")
    s.set_defaults(func=cmd_install_loader)
    s = sub.add_parser("loader", help="the loader slots on the boot partition: the committed one, the one on "
                                      "trial and its tries")
    s.add_argument("--boot", metavar="DEVICE", help="the boot partition (default: partition 1 of the banks disk)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_loader)
    s = sub.add_parser("timeline", help="how long each step of this boot's init took")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_timeline)
    s = sub.add_parser("log", help="the boot records, newest first")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_log)
    return p


def main(argv: list[str] | None = None, banks_root: str = BANKS, run_dir: str = RUN) -> int:
    """bankctl with the command line `argv`. On the device the banks partition and the init's run directory
    are contract.BANKS and RUN; tests give their own (no environment variable moves them)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    args.run_dir = run_dir
    root = banks_root
    if not os.path.isdir(os.path.join(root, "overlay")):
        print(f"bankctl: {root} is not a mounted banks partition (no overlay/ directory)", file=sys.stderr)
        return EXIT_ERROR
    banks = Banks(root)
    try:
        if getattr(args, "own_lock", False):  # poll: for each poll, never while it waits; apply: around the stage
            return int(args.func(banks, args))
        with lock_banks(root, exclusive=args.command not in ("status", "log", "timeline", "loader")):
            return int(args.func(banks, args))
    except BankbootError as e:  # its class says the exit code and, for a stage, failed (retry) or refused
        lead = "\n" if e.exit_code == EXIT_STAGE else ""  # after the progress bar
        print(f"{lead}bankctl {args.command}: {verdict(e)}{e}", file=sys.stderr)
        return e.exit_code
    except (OSError, RuntimeError) as e:  # I/O; and anything not ours still ends in a message, not a traceback
        print(f"bankctl {args.command}: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
