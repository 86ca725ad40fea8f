"""`bankctl poll URL`: one check of a channel on static storage (a web server, a CDN, an object store), and
the stage of what it offers, with the same resumable chunked download as `bankctl stage URL`.

One poll, under the banks partition's lock (taken without waiting: while another poll or a stage holds it,
this one does nothing):

1. nothing at all while the running image is on trial or has not confirmed its boot (`mark-good`,
   `boot-ok`: updating then could replace the only image known good), while a commit or rollback waits for
   the reboot, or while an inhibit file exists (/run/bankboot/inhibit, or --inhibit FILE);
2. the channel document, asked `If-None-Match` with the ETag of the one taken last time (304: that one is
   still it; 204: the server has nothing for this device), with headers that tell the server who asks
   (identity.py); checked: signature (trust.py, as manifests), format, board, expiry, not older than the
   one taken before;
3. what it means here: nothing when it offers the current image, one that failed here before (a trial that
   fell back: the same image is not tried again), or the one already staged; refused when it may not
   replace the running version (min_version) or lies below the anti-rollback floor;
4. the stage: the bank's manifest must be the one the document names (before a byte is written), the exact
   number of bytes to fetch is printed, then the download; `download_only` stops once it is complete
   (`bankctl apply` stages it later) and `reboot` reboots into the trial.

The poll state (pollstate.py) is written only when a document was taken: a refused document or bank, or a
failed download, changes nothing on the device (a failed download keeps what it verified, for the next
poll to resume, as `stage URL` does)."""

from __future__ import annotations

import os
import time

from initfs.identity import device_id, headers
from overlay_layout import bootlog, pollstate
from overlay_layout.errors import Refused
from overlay_layout.layout import DEFAULT_TRIES, MANIFEST
from overlay_layout.lock import lock_banks
from overlay_layout.net.channel import (
    MAX_BYTES,
    SUFFIX,
    Channel,
    ChannelError,
    check_for,
    manifest_digest,
    parse_document,
)
from overlay_layout.net.document import fetch_document
from overlay_layout.net.errors import NetError
from overlay_layout.net.url import parse_url
from overlay_layout.stage import StageError
from overlay_layout.state import BAD, GOOD, TRIAL, Banks
from overlay_layout.trust import version_lt
from overlay_layout.utctime import format_utc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from overlay_layout.bankfile import BankFile
    from overlay_layout.net.transport import Settings
    from overlay_layout.records import Booted
    from overlay_layout.trust import Policy


class NotNow(Refused):
    """The device is in a state in which it does not poll (exit 3): it says which and until when."""


class PollFailed(StageError):
    """The channel document could not be fetched or was refused; `transient`: a later poll may do better."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Device:
    """What a poll knows of the device it runs on: its banks partition, trust policy, board, bankboot
    version, what this boot booted (/run/bankboot/booted), the root its /etc is under (machine-id), and
    the network settings (timeouts, TLS) its requests use."""

    def __init__(self, banks: Banks, policy: Policy, board: str, bankboot: str, booted: Booted,
                 settings: Settings, root: str = "/", machine: str | None = None) -> None:
        self.banks, self.policy, self.board, self.bankboot, self.booted = banks, policy, board, bankboot, booted
        self.settings, self.root, self.machine = settings, root, machine


class Options:
    __slots__ = ("channel", "download_only", "inhibit", "reboot", "tries", "upper", "url")

    def __init__(self, url: str, tries: int = DEFAULT_TRIES, upper: str = "copy", reboot: bool = False,
                 download_only: bool = False, inhibit: tuple[str, ...] = (), channel: str | None = None) -> None:
        self.url, self.tries, self.upper, self.reboot = url, tries, upper, reboot
        self.download_only, self.inhibit, self.channel = download_only, inhibit, channel


class Result:
    """What one poll did: `action` (nothing, staged, downloaded, pending; a rollout server's poll also
    reported, canceled) and what it cost on the network; `interval`: the polling sleep a rollout server asked
    for (initfs/hawkbit.py), which a poll loop then follows."""

    def __init__(self, action: str, summary: str, requests: int = 0, received: int = 0) -> None:
        self.action, self.summary, self.requests, self.received = action, summary, requests, received
        self.interval: int | None = None


def running_image(dev: Device) -> str | None:
    return dev.booted.get("image") or dev.banks.layout.pointer("current")


def check_ready(dev: Device, opts: Options) -> None:
    """NotNow when this is no time to update (step 1 of the module's docstring)."""
    banks = dev.banks
    st = banks.load()
    running = running_image(dev)
    entry = banks.image_state(st, running) if running else {}
    if running is not None and entry.get("state") == TRIAL:
        raise NotNow(f"the running image {running} is on trial: not polling until it is committed (bankctl "
                     f"mark-good) or has fallen back")
    if running is not None and banks.manifest(running).get("confirm_boots") is True and entry.get("unconfirmed"):
        raise NotNow(f"the running image {running} has not confirmed this boot (bankctl boot-ok): not polling "
                     f"until it has")
    nxt = banks.layout.pointer("next")
    if nxt is not None and banks.image_state(st, nxt).get("state") == GOOD:
        raise NotNow(f"a switch to {nxt} (a commit or a rollback) finishes at the next boot: not polling until "
                     f"then")
    for path in opts.inhibit:
        if os.path.lexists(path):
            reason = _first_line(path)
            raise NotNow(f"updates are inhibited by {path}{f' ({reason})' if reason else ''}: not polling while "
                         f"it exists")


def _first_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(200).decode("utf-8", "replace").strip().split("\n", 1)[0]
    except OSError:
        return ""


def fallback_of(dev: Device, st: dict[str, Any]) -> str | None:
    """"<image> <version>: <why>" when this boot fell back from an image (the boot log's record of it), or
    the release the channel offers failed here before; None otherwise. Records what it finds in `st`."""
    records = bootlog.read_log(dev.banks.root)
    last = records[-1] if records else {}
    gone = last.get("fallback_from") if last.get("image") == running_image(dev) else None
    failed = st.setdefault("failed", {})
    image: object = (st.get("offered") or {}).get("image")
    if isinstance(gone, dict) and isinstance(gone.get("image"), str):
        image = gone["image"]
        before = failed.get(image)
        version = dev.banks.manifest(gone["image"]).get("version") or \
            (before.get("version") if isinstance(before, dict) else None) or "?"
        failed[gone["image"]] = {"version": version, "reason": str(gone.get("reason", ""))[:300],
                                 "time": last.get("time", 0)}
    info = failed.get(image) if isinstance(image, str) else None
    return f"{image} {info.get('version')}: {info.get('reason')}" if isinstance(info, dict) else None


def _failed_here(dev: Device, st: dict[str, Any], ch: Channel) -> str | None:
    """Why the offered image failed on this device before (the state says bad), or None."""
    entry = dev.banks.image_state(dev.banks.load(), ch.image)
    known = st.get("failed", {}).get(ch.image)
    if entry.get("state") == BAD:
        reason = entry.get("reason") or "marked bad"
        st["failed"][ch.image] = {"version": ch.version, "reason": reason[:300], "time": int(time.time())}
        return reason
    return str(known.get("reason")) if isinstance(known, dict) else None


def fetch_channel(dev: Device, opts: Options, st: dict[str, Any], settings: Settings,
                  say: Callable[[str], None]) -> tuple[Channel | None, int, int, str | None]:
    """The channel document (None on 204), the requests and bytes it cost, its ETag; PollFailed otherwise."""
    same = st.get("url") == opts.url and isinstance(st.get("document"), str)
    try:
        got = fetch_document(opts.url, settings, st.get("etag") if same else None, MAX_BYTES)
    except NetError as e:
        raise PollFailed(str(e), e.transient) from e
    if got.status == 204:
        return None, got.requests, got.received, None
    raw, etag = (got.body, got.etag) if got.status == 200 else (str(st["document"]).encode(), st.get("etag"))
    if got.status == 304:
        say("the channel document is unchanged (304 Not Modified)")
    where = parse_url(opts.url).display
    try:
        # signed as images are: by the keys in force on this device (a rotated set, its threshold)
        ch = parse_document(raw, where, dev.policy.in_force(dev.banks), dev.policy.allow_unsigned)
        want = opts.channel or _channel_from_url(where)
        if want and ch.channel != want:
            raise ChannelError(f"the channel document {where} is for channel {ch.channel}, not {want} (a document "
                               f"served under another channel's name)")
        seen = st.get("published") if same else None
        check_for(ch, where, dev.board, max(time.time(), pollstate.clock(st)), seen)
    except ChannelError as e:
        raise PollFailed(str(e), False) from e
    return ch, got.requests, got.received, etag


def _channel_from_url(where: str) -> str | None:
    name = where.rpartition("/")[2]
    return name[:-len(SUFFIX)] if name.endswith(SUFFIX) and len(name) > len(SUFFIX) else None


def decide(dev: Device, opts: Options, st: dict[str, Any], ch: Channel) -> str | None:
    """Why there is nothing to stage (step 3 of the module's docstring), or None to stage; PollFailed for a
    release this device must not take."""
    banks, lay = dev.banks, dev.banks.layout
    if ch.image == lay.pointer("current"):
        return f"up to date: {ch.version} (image {ch.image}) is current"
    why = _failed_here(dev, st, ch)
    if why is not None:
        return f"not staging {ch.image} ({ch.version}) again: it failed on this device ({why}); waiting for " \
               f"another release"
    if ch.image == lay.pointer("next") and banks.image_state(banks.load(), ch.image).get("state") == TRIAL:
        return "pending"
    running = running_image(dev)
    version = banks.manifest(running).get("version") if running else None
    if ch.min_version and isinstance(version, str) and version_lt(version, ch.min_version):
        raise PollFailed(f"channel {ch.channel}: {ch.version} replaces only {ch.min_version} and newer; this device "
                         f"runs {version} (install the release in between first)", False)
    floor = banks.floors(banks.load())[0]
    if floor and version_lt(ch.version, floor):
        raise PollFailed(f"channel {ch.channel} offers {ch.version}, below this device's anti-rollback floor {floor}: "
                         f"nothing staged", False)
    return None


def bank_check(ch: Channel, where: str) -> Callable[[BankFile], None]:
    """The `expect` of stage_url: the bank on the server is the one the channel document names."""
    def expect(bank: BankFile) -> None:
        m, source = bank.manifest, bank.source
        if (m["id"], m["version"], m["arch"]) != (ch.image, ch.version, ch.arch):
            raise StageError(f"{where} does not match the channel document: its manifest is image {m['id']} version "
                             f"{m['version']} ({m['arch']}); the document names image {ch.image} version "
                             f"{ch.version} ({ch.arch})")
        member = bank.members[MANIFEST]
        raw = source.pread(member.size, member.offset) if source is not None else b""
        if manifest_digest(raw) != ch.manifest:
            raise StageError(f"{where}: its manifest is not the one the channel document signs (sha256 "
                             f"{manifest_digest(raw)[:16]}..., the document: {ch.manifest[:16]}...): the bank was "
                             f"rebuilt or re-signed after it was published; publish it again")
        size = source.size() if source is not None else ch.size
        if size != ch.size:
            raise StageError(f"{where} is {size} bytes; the channel document says {ch.size}")
    return expect


def poll_once(dev: Device, opts: Options, say: Callable[[str], None],
              progress: Callable[[int, int], None] | None = None) -> Result:
    """One poll (see the module's docstring): LockError (busy), NotNow, PollFailed or a StageError (refused or
    failed), else the Result."""
    banks = dev.banks
    with lock_banks(banks.root, exclusive=True, wait=0):
        check_ready(dev, opts)
        st = pollstate.load(banks.root)
        running = running_image(dev)
        version = banks.manifest(running).get("version") if running else None
        fallback = fallback_of(dev, st)
        settings = dev.settings
        settings.headers = headers(device_id(dev.root), dev.board, running, version, fallback)
        ch, requests, received, etag = fetch_channel(dev, opts, st, settings, say)
        if ch is None:
            result = Result("nothing", "the server has nothing for this device (204 No Content)", requests, received)
            _save(banks, st, opts, None, None, result)
            return result
        say(ch.describe())
        why = decide(dev, opts, st, ch)
        if why == "pending":
            result = Result("pending", f"{ch.image} ({ch.version}) is staged already, on trial at the next boot",
                            requests, received)
        elif why is not None:
            result = Result("nothing", why, requests, received)
        else:
            result = _stage(dev, opts, ch, say, progress)
            result.requests += requests
            result.received += received
        _save(banks, st, opts, ch, etag, result)
        return result


def _stage(dev: Device, opts: Options, ch: Channel, say: Callable[[str], None],
           progress: Callable[[int, int], None] | None) -> Result:
    from overlay_layout.net import downloaded
    from overlay_layout.net.download import stage_url

    banks = dev.banks
    have = downloaded.find(banks)
    if opts.download_only and have is not None and have["image"] == ch.image:
        return Result("downloaded", f"{ch.image} ({ch.version}) is downloaded already: bankctl apply stages it")
    bank_url = str(parse_url(opts.url).join(ch.bank))
    where = parse_url(bank_url).display

    def announce(fetch: int, local: int, resumed: int) -> None:
        say(f"fetching {fetch} bytes ({fetch / 1e6:.1f} MB) of the {(fetch + local + resumed) / 1e6:.1f} MB image "
            f"from {where}; {local / 1e6:.1f} MB from images on this device, {resumed / 1e6:.1f} MB downloaded "
            f"before")

    m, stats = stage_url(banks, bank_url, dev.policy, dev.bankboot, tries=opts.tries, upper=opts.upper,
                         machine=dev.machine, progress=progress, booted=dev.booted.get("image"),
                         settings=dev.settings, expect=bank_check(ch, where), announce=announce,
                         download_only=opts.download_only)
    say(f"fetched: {stats.line(m)}")
    if stats.downloaded:
        return Result("downloaded", f"downloaded {m['id']} (version {m['version']}): bankctl apply makes it next",
                      stats.requests, stats.received)
    return Result("staged", f"staged {m['id']} (version {m['version']}, {m['_signed_by']}) as next, on trial with "
                            f"{opts.tries} tries", stats.requests, stats.received)


def _save(banks: Banks, st: dict[str, Any], opts: Options, ch: Channel | None, etag: str | None,
          result: Result) -> None:
    st.update({"url": opts.url, "checked": int(time.time()), "result": result.summary, "action": result.action})
    if result.action in ("staged", "downloaded") and ch is not None:  # what the update cost, for status
        st["staged"] = {"image": ch.image, "version": ch.version, "requests": result.requests,
                        "received": result.received, "time": st["checked"]}
    if ch is not None:
        st.update({"document": ch.raw.decode("utf-8", "replace"), "published": ch.published,
                   "clock": max(pollstate.clock(st), ch.published),
                   "offered": {"channel": ch.channel, "image": ch.image, "version": ch.version}})
        if etag:
            st["etag"] = etag
        else:
            st.pop("etag", None)
    pollstate.save(banks.root, st)


def status_of(root: str, etc_root: str = "/") -> dict[str, Any]:
    """For `bankctl status --json`: the device's id and what the last poll did."""
    st = pollstate.load(root)
    keys = ("url", "checked", "result", "action", "offered", "failed", "staged")
    last = {k: st.get(k) for k in keys} if "url" in st else None
    checked = last.get("checked") if last is not None else None
    if last is not None and isinstance(checked, int):
        last["checked_utc"] = format_utc(checked)
    return {"device_id": device_id(etc_root), "poll": last}
