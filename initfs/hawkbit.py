"""`bankctl poll --hawkbit URL --tenant T --controller-id ID`: one poll of a hawkBit-DDI rollout server
(hawkBit, goosebit), and what it asks for, with the rules of a channel poll (initfs/poll.py): under the
banks partition's lock taken without waiting, nothing while the running image is on trial or unconfirmed,
while a switch waits for the reboot, or while an inhibit file exists. The protocol is
overlay_layout/net/ddi.py's; the artifact is a .swu holding the bank (overlay_layout/net/swu.py), read by
range at the bank's offset with the resumable chunked stage of `bankctl stage URL`.

One poll:

1. GET the controller base; PUT configData (board, hardware revision, running version and image, bankboot's
   version, device id) when the server asks for it or it changed since it was last sent;
2. a report owed for an action this device staged before (the pending-action record, hawkbit.json on the
   banks partition, written through durable.py): nothing while the trial has not booted; after it, `closed
   success` when the image committed, `closed failure` with the reason (the self-test's, from the state and
   the boot log) when the device fell back, sent by the image that came back, to the action id recorded (as
   SWUpdate's suricatta does: the server may have moved on to another action meanwhile);
3. a cancelAction: before the trial boots, the download or the staged trial is dropped and the
   cancellation confirmed (`closed success`); after, it is `rejected` (the trial's report follows);
4. a deploymentBase: exactly one chunk with one artifact, a .swu for this board whose bank's manifest is
   the one its bankboot.json names and whose version is the chunk's; feedback `proceeding` when the
   download starts, `downloaded` and `proceeding` ("staged, rebooting into the trial") once it is staged;
   a download cut on the way says so (`proceeding`, the action stays open) and the next poll resumes it; an
   artifact that is not a bank, is for another board or another architecture, or fails its signature is
   `closed failure` with the reason. An artifact that changes during the download (a reassignment: the
   same URL serves another file) stops it; the next poll takes the deployment as it is then.

Nothing is written on the device by a poll that fails or is refused (401, 404, 5xx, HTML, a bad artifact):
the record is written once the bank's download starts (before a byte of its image), then at each step."""

from __future__ import annotations

import os
import time

from initfs.identity import device_id
from initfs.poll import NotNow, PollFailed, Result, check_ready, running_image
from overlay_layout import bootlog, durable, jsontext
from overlay_layout.layout import DEFAULT_TRIES, MANIFEST
from overlay_layout.lock import lock_banks
from overlay_layout.net.channel import manifest_digest
from overlay_layout.net.ddi import (
    Client,
    DdiError,
    Deployment,
    controller_url,
    feedback,
    href,
    parse_deployment,
    parse_sleep,
)
from overlay_layout.net.errors import FileChanged, HttpStatus, NetError
from overlay_layout.net.swu import SwuError, head_needed, parse_head
from overlay_layout.net.url import parse_url
from overlay_layout.pollstate import read_record
from overlay_layout.stage import StageError
from overlay_layout.state import BAD, GOOD, TRIAL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from initfs.poll import Device
    from overlay_layout.bankfile import BankFile
    from overlay_layout.net.transport import RemoteFile, Window

STATE_FILE = "hawkbit.json"
FORMAT = 1
MAX_STATE = 64 << 10
SHORTEST, LONGEST = 5, 7 * 86400  # the server's polling sleep is taken within these
HEAD = 64 << 10  # the artifact's first request: its cpio headers, sw-description, bankboot.json


class Options:
    __slots__ = ("base", "inhibit", "reboot", "revision", "server", "tries", "upper")

    def __init__(self, server: str, tenant: str, controller: str, tries: int = DEFAULT_TRIES, upper: str = "copy",
                 reboot: bool = False, inhibit: tuple[str, ...] = (), revision: str = "default") -> None:
        try:
            self.base = controller_url(server, tenant, controller)
        except NetError as e:
            raise PollFailed(str(e), False) from e
        self.server, self.tries, self.upper, self.reboot = server, tries, upper, reboot
        self.inhibit, self.revision = inhibit, revision


def state_path(root: str) -> str:
    return os.path.join(root, STATE_FILE)


def load_state(root: str) -> dict[str, Any]:
    """The record; a missing or damaged file reads as a fresh start."""
    st = read_record(state_path(root), MAX_STATE, FORMAT)
    if not isinstance(st.get("action"), dict):
        st.pop("action", None)
    return st


def save_state(root: str, st: dict[str, Any]) -> None:
    st["failed"] = dict(list(st.get("failed", {}).items())[-16:])
    durable.write_file(state_path(root), jsontext.dumps(st, sort_keys=True).encode() + b"\n")


def bounded_sleep(seconds: int, text: str, say: Callable[[str], None]) -> int:
    """The server's polling sleep within SHORTEST..LONGEST: a server asking for 0 s would have a fleet
    hammer it, one asking for a year would strand it; each said, with what is done instead."""
    if seconds < SHORTEST:
        say(f"the DDI server asks for polls {text} apart: shorter than {SHORTEST} s, polling every {SHORTEST} s "
            f"instead")
        return SHORTEST
    if seconds > LONGEST:
        say(f"the DDI server asks for polls {text} apart: longer than {LONGEST // 86400} days (a device that "
            f"waits that long misses every rollout and cancellation), polling every {LONGEST // 86400} days instead")
        return LONGEST
    return seconds


def config_data(dev: Device, opts: Options) -> dict[str, str]:
    """configData: goosebit reads hw_boardname, hw_revision and sw_version (all three always: a missing one
    resets the server's copy); hawkBit shows them all."""
    running = running_image(dev)
    version = dev.banks.manifest(running).get("version") if running else None
    return {"hw_boardname": dev.board or "default", "hw_revision": opts.revision, "sw_version": str(version or ""),
            "bankboot_image": str(running or ""), "bankboot_version": dev.bankboot,
            "bankboot_device": device_id(dev.root) or ""}


def trial_outcome(dev: Device, rec: dict[str, Any]) -> tuple[str, str] | None:
    """("success"|"failure", what happened) once the staged image's trial has booted, None before."""
    banks, image, version = dev.banks, str(rec.get("image")), rec.get("version")
    st = banks.load()
    entry = banks.image_state(st, image)
    lay = banks.layout
    if lay.pointer("next") == image and entry.get("state") == TRIAL:
        return None
    running = running_image(dev)
    if lay.pointer("current") == image and entry.get("state") == GOOD:
        return "success", f"bankctl: booted {image} ({version}) on trial; it committed and runs now"
    reason = entry.get("reason") if entry.get("state") == BAD else None
    for r in reversed(bootlog.read_log(banks.root)):
        gone = r.get("fallback_from")
        if not reason and isinstance(gone, dict) and gone.get("image") == image:
            reason = gone.get("reason")
    back = dev.banks.manifest(running).get("version") if running else None
    reason = reason or "it is no longer on the banks partition"
    return "failure", f"bankctl: the trial of {image} ({version}) failed: {reason}; the device fell back to " \
                      f"{running} ({back})"


def hawkbit_once(dev: Device, opts: Options, say: Callable[[str], None],
                 progress: Callable[[int, int], None] | None = None) -> Result:
    """One poll (see the module's docstring): LockError, NotNow, PollFailed or a StageError, else the Result."""
    with lock_banks(dev.banks.root, exclusive=True, wait=0):
        check_ready(dev, opts)  # type: ignore[arg-type]  # it reads only `inhibit`
        client = Client(opts.base, dev.settings)
        try:
            return _Poll(dev, opts, client, say, progress).run()
        except NetError as e:
            raise PollFailed(str(e), e.transient) from e
        finally:
            client.close()


class _Poll:
    def __init__(self, dev: Device, opts: Options, client: Client, say: Callable[[str], None],
                 progress: Callable[[int, int], None] | None) -> None:
        self.dev, self.opts, self.client, self.say, self.progress = dev, opts, client, say, progress
        self.root = dev.banks.root
        self.st = load_state(self.root)
        self.interval: int | None = None

    def result(self, action: str, summary: str, save: bool = True) -> Result:
        requests, received = self.client.counted()
        r = Result(action, summary, requests, received)
        r.interval = self.interval
        if save:
            self.st.update({"server": self.opts.base, "checked": int(time.time()), "result": summary,
                            "last": action})
            if self.interval is not None:
                self.st["sleep"] = self.interval
            save_state(self.root, self.st)
        return r

    def send(self, url: str, body: dict[str, Any], must: bool = False) -> bool:
        """Feedback: True when delivered. A progress report that fails is said and dropped; a final one
        (`must`) raises, so its record stays owed and the next poll sends it again."""
        try:
            self.client.post(url, body)
            return True
        except NetError as e:
            if must:
                raise
            self.say(f"feedback to {parse_url(url).display} not delivered: {e}")
            return False

    def run(self) -> Result:
        base = self.client.get(self.opts.base)
        if not isinstance(base, dict):
            raise DdiError(f"{parse_url(self.opts.base).display}: the controller base is not a JSON object: is "
                           f"this a hawkBit DDI server (and the tenant right)?")
        polling = (base.get("config") or {}).get("polling") if isinstance(base.get("config"), dict) else None
        if isinstance(polling, dict) and "sleep" in polling:
            sleep = parse_sleep(polling["sleep"], parse_url(self.opts.base).display)
            self.interval = bounded_sleep(sleep, str(polling["sleep"]), self.say)
        links = base.get("_links") if isinstance(base.get("_links"), dict) else {}
        data = config_data(self.dev, self.opts)
        wanted = href(links, "configData")
        if wanted or self.st.get("config") != data:
            # `status` and `time` for hawkBit releases that still require them (rauc-hawkbit-updater sends both)
            self.client.put(wanted or self.opts.base + "/configData", {
                "mode": "merge", "data": data, "time": time.strftime("%Y%m%dT%H%M%S", time.gmtime()),
                "status": {"execution": "closed", "result": {"finished": "success"}}})
            self.st["config"] = data
        rec = self.st.get("action")
        cancel = href(links, "cancelAction")
        if rec is not None and rec.get("phase") == "staged":
            outcome = trial_outcome(self.dev, rec)
            if outcome is None:
                if cancel:
                    return self.cancel(cancel, rec)
                return self.result("pending", f"{rec.get('image')} ({rec.get('version')}) is staged for action "
                                              f"{rec.get('id')}, on trial at the next boot")
            rec.update({"phase": "done", "report": outcome[0], "reason": outcome[1]})
        if rec is not None and rec.get("phase") == "done" and not rec.get("reported"):
            if cancel:  # too late: the trial has booted; its result follows on the action
                self.reject(cancel, rec)
            return self.report(rec)
        if cancel:
            return self.cancel(cancel, rec)
        dep_url = href(links, "deploymentBase")
        if dep_url is None:
            return self.result("nothing", "the DDI server has no action for this device")
        doc = self.client.get(dep_url)
        try:
            dep = parse_deployment(doc, parse_url(dep_url).display)
        except DdiError as e:  # one bankctl cannot take: the server's record says why (rauc-hawkbit-updater too)
            action = doc.get("id") if isinstance(doc, dict) else None
            if isinstance(action, (str, int)) and not isinstance(action, bool):
                self.send(_sub(dep_url, "feedback"), feedback(str(action), "closed", "failure", [f"bankctl: {e}"]))
            raise
        return self.deploy(dep, _sub(dep_url, "feedback"))

    def stop_id(self, url: str) -> str:
        doc = self.client.get(url)
        ca = doc.get("cancelAction") if isinstance(doc, dict) else None
        stop = ca.get("stopId") if isinstance(ca, dict) else None
        stop = str(stop if stop is not None else (doc.get("id") if isinstance(doc, dict) else ""))
        if not stop:
            raise DdiError(f"{parse_url(url).display}: a cancelAction without an action id (stopId)")
        return stop

    def reject(self, url: str, rec: dict[str, Any]) -> None:
        stop = self.stop_id(url)
        if stop == str(rec.get("id")):
            self.send(_sub(url, "feedback"), feedback(stop, "rejected", "success", [
                "bankctl: too late to cancel: the trial has booted; its result is reported to the action"]))
        else:
            self.send(_sub(url, "feedback"), feedback(stop, "closed", "success", [
                f"bankctl: nothing of action {stop} on this device"]))

    def report(self, rec: dict[str, Any]) -> Result:
        finished, reason = str(rec["report"]), str(rec.get("reason"))
        self.send(str(rec["feedback"]), feedback(str(rec["id"]), "closed", finished, [reason]), must=True)
        rec["reported"] = True
        if finished == "failure":
            self.st["failed"][str(rec.get("version"))] = {"image": rec.get("image"), "reason": reason[:300]}
        self.say(f"reported action {rec['id']} to the DDI server: closed {finished}")
        return self.result("reported", f"action {rec['id']}: closed {finished}: {reason}")

    def cancel(self, url: str, rec: dict[str, Any] | None) -> Result:
        stop = self.stop_id(url)
        fb = _sub(url, "feedback")
        ours = rec is not None and str(rec.get("id")) == stop and not rec.get("reported")
        if ours and rec is not None and rec.get("phase") in ("downloading", "staged"):
            banks, image = self.dev.banks, rec.get("image")
            if rec.get("phase") == "staged" and isinstance(image, str) and banks.layout.pointer("next") == image:
                banks.mark_bad(image, "canceled by the rollout server before its trial booted")
            gone = banks.gc(running_image(self.dev))
            what = f"dropped {', '.join(gone)}" if gone else "nothing on the banks partition to drop"
            self.send(fb, feedback(stop, "closed", "success", [f"bankctl: canceled before the trial booted: {what}"]),
                      must=True)
            rec.update({"phase": "canceled", "reported": True})
            return self.result("canceled", f"action {stop} canceled by the server: {what}")
        self.send(fb, feedback(stop, "closed", "success", [f"bankctl: nothing of action {stop} on this device"]),
                  must=True)
        return self.result("canceled", f"action {stop} canceled by the server: nothing of it on this device")

    def deploy(self, dep: Deployment, fb: str) -> Result:
        dev, banks = self.dev, self.dev.banks
        running = running_image(dev)
        version = banks.manifest(running).get("version") if running else None
        rec = self.st.get("action")
        if dep.version == version:
            self.send(fb, feedback(dep.action, "closed", "success",
                                   [f"bankctl: {dep.version} runs already ({running})"]), must=True)
            self.st["action"] = {"id": dep.action, "version": dep.version, "image": running, "feedback": fb,
                                 "phase": "done", "report": "success", "reported": True}
            return self.result("nothing", f"up to date: action {dep.action} offers {dep.version}, which runs")
        failed = self.st["failed"].get(dep.version)
        if isinstance(failed, dict):
            why = f"bankctl: not trying {dep.version} again: it failed on this device ({failed.get('reason')})"
            self.send(fb, feedback(dep.action, "closed", "failure", [why]), must=True)
            return self.result("nothing", why)
        if dep.download == "skip":
            return self.result("nothing", f"action {dep.action}: the server says download: skip")
        if not dep.install_now and rec is not None and rec.get("id") == dep.action and rec.get("image"):
            from overlay_layout.net import downloaded

            have = downloaded.find(banks)
            if have is not None and have["image"] == rec["image"]:
                return self.result("downloaded", f"{rec['image']} for action {dep.action} is downloaded already; "
                                                 f"waiting for the server to let it install")
        if rec is not None and rec.get("phase") == "downloading" and rec.get("id") != dep.action:
            self.say(f"the DDI server replaced action {rec.get('id')} ({rec.get('version')}) by {dep.action} "
                     f"({dep.version})")
        new = {"id": dep.action, "version": dep.version, "feedback": fb, "phase": "downloading",
               "artifact": dep.artifact.filename, "size": dep.artifact.size, "time": int(time.time())}
        before = dict(self.st)
        resumed = rec is not None and rec.get("id") == dep.action and rec.get("phase") == "downloading"
        self.send(fb, feedback(dep.action, "proceeding", "none", [
            f"bankctl: {'resuming' if resumed else 'downloading'} {dep.artifact.filename} ({dep.artifact.size} bytes) "
            f"from {parse_url(dep.artifact.url).authority}"], (0, 2)))
        started = {"yes": False}

        def announce(fetch: int, local: int, was: int) -> None:
            self.say(f"fetching {fetch} bytes ({fetch / 1e6:.1f} MB) of the {(fetch + local + was) / 1e6:.1f} MB image "
                     f"from {parse_url(dep.artifact.url).display}; {local / 1e6:.1f} MB from images on this device, "
                     f"{was / 1e6:.1f} MB downloaded before")
            self.st["action"] = new
            save_state(self.root, self.st)  # before a byte of the image: the record a power cut finds
            started["yes"] = True

        info: dict[str, Any] = {}
        try:
            m, stats = self.stage(dep, info, announce)
        except StageError as e:
            cause = e.__cause__
            if isinstance(cause, FileChanged):
                why = (f"the artifact changed on the server during the download (the deployment changed?): "
                       f"stopped; the next poll takes the deployment as it is then ({cause})")
                self.send(fb, feedback(dep.action, "proceeding", "none", [f"bankctl: {why}"]))
                raise PollFailed(why, True) from e
            if e.transient:
                why = f"download failed: {e}; the next poll resumes it"
                self.send(fb, feedback(dep.action, "proceeding", "none", [f"bankctl: {why}"]))
                raise PollFailed(why, True) from e
            reason = self.explain(e, dep)
            self.send(fb, feedback(dep.action, "closed", "failure", [f"bankctl: {reason}"]))
            if started["yes"]:  # nothing of this action stays on the device: the record goes back as it was
                self.st = before
                save_state(self.root, before)
            raise PollFailed(reason, False) from e
        if stats.downloaded:  # download only, or outside the maintenance window: no trial yet
            why = "the action is download-only (update: skip)" if dep.update == "skip" else \
                "outside the maintenance window"
            new.update({"phase": "downloading", "image": m["id"]})
            self.st["action"] = new
            save_state(self.root, self.st)
            self.send(fb, feedback(dep.action, "downloaded", "success" if dep.update == "skip" else "none", [
                f"bankctl: downloaded and verified {m['id']}: {stats.line(m)}; not installed: {why}"], (1, 2)))
            return self.result("downloaded", f"downloaded {m['id']} (version {m['version']}) for action {dep.action}; "
                                             f"not staged: {why} (the next poll offering it to install stages it)")
        new.update({"phase": "staged", "image": m["id"]})
        self.st["action"] = new
        save_state(self.root, self.st)
        self.send(fb, feedback(dep.action, "downloaded", "none", [f"bankctl: downloaded and verified {m['id']}: "
                                                                  f"{stats.line(m)}"], (1, 2)))
        self.send(fb, feedback(dep.action, "proceeding", "none", [
            f"bankctl: staged {m['id']} ({m['version']}, {m['_signed_by']}) as next, on trial with {self.opts.tries} "
            f"tries; {'rebooting into the trial' if self.opts.reboot else 'the trial boots at the next reboot'}"],
            (2, 2)))
        return self.result("staged", f"staged {m['id']} (version {m['version']}, {m['_signed_by']}) for action "
                                     f"{dep.action} as next, on trial with {self.opts.tries} tries")

    def explain(self, e: StageError, dep: Deployment) -> str:
        cause = e.__cause__
        art = parse_url(dep.artifact.url)
        ddi = parse_url(self.opts.base)
        if isinstance(cause, HttpStatus) and cause.status in (401, 403) and art.origin != ddi.origin:
            return (f"the artifact {art.display} is on another host than the DDI server ({ddi.authority}) and refused "
                    f"the download (HTTP {cause.status}): bankctl sends the device's token to the DDI server only; "
                    f"the artifact's host must serve it without (a presigned or public URL)")
        return str(e)

    def stage(self, dep: Deployment, info: dict[str, Any],
              announce: Callable[[int, int, int], None]) -> tuple[Any, Any]:
        from overlay_layout.net.download import stage_url
        from overlay_layout.net.transport import Window

        dev = self.dev
        where = parse_url(dep.artifact.url).display

        def opener(remote: RemoteFile) -> Window:
            head = remote.read_upto(0, HEAD)
            if remote.size is not None and remote.size != dep.artifact.size:
                raise FileChanged(f"{where} is {remote.size} bytes; the deployment says {dep.artifact.size}")
            try:
                got, member = parse_head(head, where)
            except SwuError as err:
                if len(head) == HEAD and head_needed(head) > len(head):
                    raise StageError(f"{where}: its headers are larger than {HEAD >> 10} KiB: not a bankboot .swu") \
                        from err
                raise StageError(str(err)) from err
            info.update(got)
            listed = got["boards"]
            boards = [str(b) for b in listed] if isinstance(listed, list) else []
            if dev.board not in boards:
                raise StageError(f"{where} is for board{'s' if len(boards) > 1 else ''} {', '.join(boards)}; this "
                                 f"device is {dev.board or 'of no known board'}")
            if got["version"] != dep.version:
                raise StageError(f"{where} holds version {got['version']}; the deployment names {dep.version}")
            if member.offset + member.size > dep.artifact.size:
                raise StageError(f"{where}: its bank member runs past the artifact's {dep.artifact.size} bytes")
            return Window(remote, member.offset, member.size)

        def expect(bank: BankFile) -> None:
            m, source = bank.manifest, bank.source
            if (m["id"], m["version"]) != (info["image"], info["version"]):
                raise StageError(f"{where}: the bank inside is image {m['id']} version {m['version']}; its "
                                 f"bankboot.json names {info['image']} {info['version']}")
            member = bank.members[MANIFEST]
            raw = source.pread(member.size, member.offset) if source is not None else b""
            if manifest_digest(raw) != info["manifest"]:
                raise StageError(f"{where}: the bank's manifest is not the one its bankboot.json names (re-signed "
                                 f"after it was packed?)")

        return stage_url(dev.banks, dep.artifact.url, dev.policy, dev.bankboot, tries=self.opts.tries,
                         upper=self.opts.upper, machine=dev.machine, progress=self.progress,
                         booted=dev.booted.get("image"), settings=dev.settings, expect=expect, announce=announce,
                         opener=opener, restarts=0, download_only=not dep.install_now)


def _sub(url: str, leaf: str) -> str:
    """{href}/{leaf}, the href's query (hawkBit's cache-busters) dropped."""
    return url.partition("?")[0].rstrip("/") + "/" + leaf


def status_of(root: str) -> dict[str, Any] | None:
    """For `bankctl status --json`: the DDI server, the last poll and the action record."""
    st = load_state(root)
    if "server" not in st:
        return None
    return {k: st.get(k) for k in ("server", "checked", "result", "last", "sleep", "action", "failed")}


__all__ = ["NotNow", "Options", "hawkbit_once", "status_of"]
