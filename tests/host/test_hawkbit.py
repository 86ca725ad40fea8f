"""`bankctl poll --hawkbit` against a real goosebit (a hawkBit-DDI server) on loopback: the .swu goosebit
indexes, a device that takes a release and reports its trial (success, and the fall-back with its reason,
from the image that came back), a cut download resumed, a deployment changed mid-download, a cancel before
the trial boots, and the bad servers and artifacts of issue 22, each a clear message with nothing changed
on the device. What the server recorded is read back from its own API. goosebit runs with device auth in
`lax` mode: devices without a token registered poll freely, one registered with a token must send it."""

from __future__ import annotations

import argparse
import http.server
import json
import re
import subprocess
import threading
from pathlib import Path

import pytest

from builder.lab.goosebit import Goosebit
from builder.swu import write_swu
from initfs.hawkbit import Options, hawkbit_once, load_state
from initfs.poll import PollFailed
from initfs.pollcmd import run_poll
from overlay_layout import bootlog
from overlay_layout.net.ddi import DdiAuth
from overlay_layout.state import Banks
from tests.ddiproxy import Answer, DdiProxy, json_answer
from tests.fleet import BOARD, Release, make_device, snapshot

ARGS = argparse.Namespace(every=None, reboot_command="true", jitter=0.2)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
    return Release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def swus(release: Release, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("swu")
    made = {}
    for version in ("1.1.0", "1.2.0"):
        made[version] = out / f"app-{version}.swu"
        write_swu(release.banks[version], made[version], [BOARD])
    return made


@pytest.fixture(scope="module")
def server(swus: dict[str, Path]):
    with Goosebit(device_auth="lax") as gb:
        gb.ids = {v: gb.upload(p) for v, p in swus.items()}  # type: ignore[attr-defined]
        yield gb


def device(tmp_path: Path, release: Release, booted: dict | None = None, token: str | None = None):
    dev = make_device(tmp_path / "dev", release, booted)
    if token is not None:
        (tmp_path / "token").write_text(token + "\n")
        dev.settings.auth = DdiAuth(str(tmp_path / "token"))
    return dev


def once(dev, url: str, controller: str, said: list[str] | None = None):
    return hawkbit_once(dev, Options(url, "DEFAULT", controller), said.append if said is not None else lambda _l: None)


def registered(server: Goosebit, dev, controller: str, url: str | None = None) -> None:
    """The device's first poll (goosebit registers it and asks for its configData)."""
    assert once(dev, url or server.url, controller).action == "nothing"
    d = server.devices()[controller]
    assert (d["last_state"], d["sw_version"], d["hardware"]["model"]) == ("Registered", "1.0.0", BOARD), d


def test_goosebit_indexes_the_swu(server: Goosebit, swus: dict[str, Path], release: Release) -> None:
    listed = subprocess.run(["cpio", "-it", "--quiet"], stdin=swus["1.1.0"].open("rb"), capture_output=True,
                            text=True, check=True).stdout.split()
    assert listed == ["sw-description", "bankboot.json", f"{release.ids['1.1.0']}.bank"]  # GNU cpio reads it
    sw = {s["version"]: s for s in server.software()}
    assert sorted(sw) == ["1.1.0", "1.2.0"]
    assert sw["1.1.0"]["compatibility"] == [{"id": sw["1.1.0"]["compatibility"][0]["id"], "model": BOARD,
                                             "revision": "default"}]
    assert sw["1.1.0"]["size"] == swus["1.1.0"].stat().st_size


def test_a_device_takes_a_release_and_reports_its_trial(server: Goosebit, release: Release, tmp_path: Path) -> None:
    dev = device(tmp_path, release)
    registered(server, dev, "ok1")
    server.assign(["ok1"], server.ids["1.1.0"])
    said: list[str] = []
    got = once(device(tmp_path, release), server.url, "ok1", said)
    image = release.ids["1.1.0"]
    assert got.action == "staged" and Banks(str(tmp_path / "dev")).layout.pointer("next") == image, said
    fetched = int(next(line for line in said if line.startswith("fetching")).split()[1])
    assert fetched < 0.1 * release.banks["1.1.0"].stat().st_size  # the .swu's bank by range: only what changed
    rec = load_state(str(tmp_path / "dev"))["action"]
    assert (rec["id"], rec["phase"], rec["image"]) == (str(server.ids["1.1.0"]), "staged", image)
    assert server.devices()["ok1"]["last_state"] == "Running"
    assert once(device(tmp_path, release), server.url, "ok1").action == "pending"  # no reboot yet
    Banks(str(tmp_path / "dev")).mark_good(image)  # the trial booted and committed itself
    got = once(device(tmp_path, release, {"image": image}), server.url, "ok1")
    assert got.action == "reported" and "closed success" in got.summary
    d = server.devices()["ok1"]
    assert (d["last_state"], d["sw_version"], d["progress"]) == ("Finished", "1.1.0", 100), d
    log = server.device_log("ok1")
    assert "downloading app-1.1.0.swu" in log and f"downloaded and verified {image}" in log, log
    assert f"booted {image} (1.1.0) on trial; it committed" in log, log
    again = once(device(tmp_path, release, {"image": image}), server.url, "ok1")
    assert again.action == "nothing" and again.requests == 1  # reported once; the server has nothing more


def test_a_trial_that_fell_back_reports_the_reason(server: Goosebit, release: Release, tmp_path: Path) -> None:
    registered(server, device(tmp_path, release), "fb1")
    server.assign(["fb1"], server.ids["1.1.0"])
    assert once(device(tmp_path, release), server.url, "fb1").action == "staged"
    image, banks = release.ids["1.1.0"], Banks(str(tmp_path / "dev"))
    current = banks.layout.pointer("current")
    reason = "self-test 20-hardware failed (exit 3): this hardware variant is not supported"
    banks.trial_failed(image, reason)  # what the init does when the trial's self-test fails, then boots current
    bootlog.append_record(str(tmp_path / "dev"), {"time": 1, "image": current, "why": "current", "trial": False,
                                                  "fallback_from": {"image": image, "reason": reason}})
    got = once(device(tmp_path, release, {"image": current}), server.url, "fb1")
    assert got.action == "reported" and "closed failure" in got.summary
    d = server.devices()["fb1"]
    assert (d["last_state"], d["sw_version"]) == ("Error", "1.0.0"), d
    assert f"the trial of {image} (1.1.0) failed: {reason}; the device fell back to {current} (1.0.0)" in \
        server.device_log("fb1")
    server.patch(["fb1"], force_update=True)  # the operator offers it again: not tried again, and said why
    got = once(device(tmp_path, release, {"image": current}), server.url, "fb1")
    assert got.action == "nothing" and "not trying 1.1.0 again: it failed on this device" in got.summary
    assert server.devices()["fb1"]["last_state"] == "Error"


def test_a_power_cut_during_the_trial_is_reported_from_what_the_next_boot_found(server: Goosebit, release: Release,
                                                                              tmp_path: Path) -> None:
    registered(server, device(tmp_path, release), "pc1")
    server.assign(["pc1"], server.ids["1.1.0"])
    dev = device(tmp_path, release)
    got = hawkbit_once(dev, Options(server.url, "DEFAULT", "pc1", tries=1), lambda _l: None)
    assert got.action == "staged"
    image, banks = release.ids["1.1.0"], Banks(str(tmp_path / "dev"))
    current = banks.layout.pointer("current")
    plan = banks.begin_boot()  # the trial's boot (its one try spent) ... and the power goes
    assert plan.candidates[0].image == image and plan.candidates[0].trial
    plan = Banks(str(tmp_path / "dev")).begin_boot()  # the next boot: no tries left, current boots
    assert plan.candidates[0].image == current
    got = once(device(tmp_path, release, {"image": current}), server.url, "pc1")
    assert got.action == "reported" and "closed failure" in got.summary
    assert f"the trial of {image} (1.1.0) failed: trial never marked good: no tries left; the device fell back to " \
           f"{current} (1.0.0)" in server.device_log("pc1")
    assert server.devices()["pc1"]["last_state"] == "Error"


def test_a_cut_download_says_so_and_the_next_poll_resumes(server: Goosebit, release: Release, tmp_path: Path) -> None:
    with DdiProxy(server.port) as proxy:
        dev = device(tmp_path, release)
        registered(server, dev, "cut1", proxy.url)
        server.assign(["cut1"], server.ids["1.1.0"])
        cuts = {"left": 1}

        def change(req, ans: Answer) -> Answer:
            start = int(req.headers.get("range", "bytes=0-").removeprefix("bytes=").partition("-")[0] or 0)
            if req.path.endswith("/download") and ans.status == 206 and 1 << 17 < start < 3 << 20 and \
                    len(ans.body) > 30000 and cuts["left"]:  # in the squashfs (the chunk index is after it)
                cuts["left"] -= 1
                ans.cut_after = 20000
            return ans

        proxy.change = change
        with pytest.raises(PollFailed, match="download failed: .*; the next poll resumes it"):
            once(device(tmp_path, release), proxy.url, "cut1")

        assert server.devices()["cut1"]["last_state"] == "Running"
        assert "download failed" in server.device_log("cut1")
        said: list[str] = []
        got = once(device(tmp_path, release), proxy.url, "cut1", said)
        assert got.action == "staged", said
        assert any(line.startswith("fetching") and "0.0 MB downloaded before" not in line for line in said), said


def test_a_deployment_changed_mid_download_stops_it(server: Goosebit, release: Release, tmp_path: Path) -> None:
    registered(server, device(tmp_path, release), "mid1")
    server.assign(["mid1"], server.ids["1.1.0"])
    moved = {"done": False}

    def progress(done: int, total: int) -> None:
        if not moved["done"]:
            moved["done"] = True
            server.assign(["mid1"], server.ids["1.2.0"])  # the operator reassigns while the device downloads

    opts = Options(server.url, "DEFAULT", "mid1")
    with pytest.raises(PollFailed, match="the artifact changed on the server during the download"):
        hawkbit_once(device(tmp_path, release), opts, lambda _l: None, progress)
    assert Banks(str(tmp_path / "dev")).layout.pointer("next") is None
    got = once(device(tmp_path, release), server.url, "mid1")
    assert got.action == "staged" and Banks(str(tmp_path / "dev")).layout.pointer("next") == release.ids["1.2.0"]
    assert load_state(str(tmp_path / "dev"))["action"]["id"] == str(server.ids["1.2.0"])


def test_a_cancel_before_the_trial_boots_drops_it(server: Goosebit, release: Release, tmp_path: Path) -> None:
    with DdiProxy(server.port) as proxy:
        registered(server, device(tmp_path, release), "can1", proxy.url)
        server.assign(["can1"], server.ids["1.1.0"])
        assert once(device(tmp_path, release), proxy.url, "can1").action == "staged"
        action = str(server.ids["1.1.0"])
        base = "/DEFAULT/controller/v1/can1"

        def fault(req):  # hawkBit's cancelAction, which goosebit lacks
            if req.method == "GET" and req.path == base:
                return json_answer({"config": {"polling": {"sleep": "00:00:05"}}, "_links": {
                    "cancelAction": {"href": f"{proxy.url}{base}/cancelAction/7"}}})
            if req.path == f"{base}/cancelAction/7":
                return json_answer({"id": "7", "cancelAction": {"stopId": action}})
            if req.path == f"{base}/cancelAction/7/feedback":
                return json_answer({})
            return None

        proxy.fault = fault
        got = once(device(tmp_path, release), proxy.url, "can1")
        assert got.action == "canceled", got.summary
        banks = Banks(str(tmp_path / "dev"))
        assert banks.layout.pointer("next") is None and release.ids["1.1.0"] not in banks.layout.images()
        sent = [body for m, p, _, body in proxy.log if p.endswith("/cancelAction/7/feedback")]
        assert sent and sent[0]["status"]["execution"] == "closed" and sent[0]["status"]["result"]["finished"] == \
            "success", sent


def test_a_cancel_after_the_trial_booted_is_rejected_and_the_trial_reported(server: Goosebit, release: Release,
                                                                           tmp_path: Path) -> None:
    with DdiProxy(server.port) as proxy:
        registered(server, device(tmp_path, release), "can2", proxy.url)
        server.assign(["can2"], server.ids["1.1.0"])
        assert once(device(tmp_path, release), proxy.url, "can2").action == "staged"
        image = release.ids["1.1.0"]
        Banks(str(tmp_path / "dev")).mark_good(image)  # the trial booted and committed before the cancel came
        base, action = "/DEFAULT/controller/v1/can2", str(server.ids["1.1.0"])

        def change(req, ans: Answer) -> Answer:
            if req.method == "GET" and req.path == base:
                doc = json.loads(ans.body)
                doc["_links"]["cancelAction"] = {"href": f"{proxy.url}{base}/cancelAction/8"}
                return json_answer(doc)
            return ans

        def fault(req):
            if req.path == f"{base}/cancelAction/8":
                return json_answer({"id": "8", "cancelAction": {"stopId": action}})
            if req.path == f"{base}/cancelAction/8/feedback":
                return json_answer({})
            return None

        proxy.change, proxy.fault = change, fault
        got = once(device(tmp_path, release, {"image": image}), proxy.url, "can2")
        assert got.action == "reported" and "closed success" in got.summary
        sent = [body["status"]["execution"] for m, p, _, body in proxy.log if p.endswith("/cancelAction/8/feedback")]
        assert sent == ["rejected"], proxy.log
        assert server.devices()["can2"]["last_state"] == "Finished"


def test_a_deployment_of_two_chunks_is_closed_with_the_reason(server: Goosebit, release: Release,
                                                              tmp_path: Path) -> None:
    with DdiProxy(server.port) as proxy:
        registered(server, device(tmp_path, release), "two1", proxy.url)
        server.assign(["two1"], server.ids["1.1.0"])

        def change(req, ans: Answer) -> Answer:
            if "/deploymentBase/" in req.path and req.method == "GET":
                doc = json.loads(ans.body)
                doc["deployment"]["chunks"] *= 2  # hawkBit: a distribution set of two software modules
                return json_answer(doc)
            return ans

        proxy.change = change
        before = snapshot(tmp_path / "dev")
        with pytest.raises(PollFailed, match="the deployment has 2 chunks; bankctl takes exactly one"):
            once(device(tmp_path, release), proxy.url, "two1")
        assert snapshot(tmp_path / "dev") == before
    assert server.devices()["two1"]["last_state"] == "Error"
    assert "the deployment has 2 chunks" in server.device_log("two1")


def test_a_download_only_action_downloads_and_installs_once_allowed(server: Goosebit, release: Release,
                                                                    tmp_path: Path) -> None:
    from overlay_layout.net.downloaded import find

    with DdiProxy(server.port) as proxy:
        registered(server, device(tmp_path, release), "dl1", proxy.url)
        server.assign(["dl1"], server.ids["1.1.0"])
        hold = {"window": "unavailable"}

        def change(req, ans: Answer) -> Answer:
            if "/deploymentBase/" in req.path and req.method == "GET" and hold["window"]:
                doc = json.loads(ans.body)
                doc["deployment"]["maintenanceWindow"] = hold["window"]  # hawkBit: not now
                return json_answer(doc)
            return ans

        proxy.change = change
        got = once(device(tmp_path, release), proxy.url, "dl1")
        banks = Banks(str(tmp_path / "dev"))
        assert got.action == "downloaded" and "outside the maintenance window" in got.summary
        assert banks.layout.pointer("next") is None and find(banks)["image"] == release.ids["1.1.0"]
        before = len(proxy.log)
        again = once(device(tmp_path, release), proxy.url, "dl1")
        assert again.action == "downloaded" and "downloaded already" in again.summary
        asked = [p.rpartition("/")[2] for _, p, _, _ in proxy.log[before:]]
        assert asked == ["dl1", str(server.ids["1.1.0"])]  # the base and the deployment: nothing fetched again
        hold["window"] = "available"
        said: list[str] = []
        got = once(device(tmp_path, release), proxy.url, "dl1", said)
        assert got.action == "staged" and Banks(str(tmp_path / "dev")).layout.pointer("next") == release.ids["1.1.0"]
        assert any(line.startswith("fetching 0 bytes") for line in said), said  # all of it was there


class RefusingHost:
    """Another host holding the artifact: it serves goosebit's one fetch at upload, and refuses requests that
    carry no token (bankctl's: it sends the device's token to the DDI server only)."""

    def __init__(self, path: Path) -> None:
        data = path.read_bytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.headers.get("User-Agent", "").startswith("bankctl"):
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{path.name}"


def not_a_bank(tmp_path: Path) -> Path:
    """An SWUpdate .swu of another program (a raw image for SWUpdate's handlers)."""
    desc = (b'software = { version = "3.0.0"; qemu-aarch64 = { hardware-compatibility = [ "default" ]; '
            b'images: ( { filename = "rootfs.ext4"; type = "raw"; device = "/dev/mmcblk0p2"; } ); }; };\n')
    out = tmp_path / "other.swu"
    entries = b""
    for ino, (name, data) in enumerate([("sw-description", desc), ("rootfs.ext4", b"\0" * 4096),
                                        ("TRAILER!!!", b"")], 1):
        n = name.encode() + b"\0"
        head = b"070701" + b"".join(b"%08X" % f for f in (ino, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0,
                                                            len(n), 0)) + n
        entries += head + b"\0" * (-len(head) % 4) + data + b"\0" * (-len(data) % 4)
    out.write_bytes(entries)
    return out


def altered(swu: Path, out: Path, version: str, board: str = BOARD) -> Path:
    """The release's .swu as goosebit's version `version` (its sw-description and bankboot.json say so; the
    bank inside says 1.1.0, which the device finds first if it gets that far), its bankboot.json naming
    `board` (a server that does not check hardware, as hawkBit does not, could hand it to this device)."""
    raw = swu.read_bytes()
    raw = raw.replace(b'"boards": ["qemu-aarch64"]', f'"boards": ["{board}"]'.encode(), 1)
    raw = raw.replace(b'version = "1.1.0";', f'version = "{version}";'.encode(), 1)
    raw = raw.replace(b'"version": "1.1.0"', f'"version": "{version}"'.encode(), 1)
    out.write_bytes(raw)
    return out


def poll_rc(dev, url: str, controller: str, capsys, tenant: str = "DEFAULT") -> tuple[int, str]:
    capsys.readouterr()
    rc = run_poll(lambda: dev, Options(url, tenant, controller), ARGS, once=hawkbit_once)
    out = capsys.readouterr()
    return rc, out.err + out.out


CASES = {
    "a wrong token (401)": ("token", 4, r"refused: GET http://127\.0\.0\.1:\d+/DEFAULT/controller/v1/bad-401: the DDI "
                                        r"server refused this device \(HTTP 401: Device authentication token does not "
                                        r"match\.\): the TargetToken in .*token is not the one the server holds"),
    "no such tenant (404)": ("tenant", 4, r"refused: http://127\.0\.0\.1:\d+/nosuch/controller/v1/bad-404: not found "
                                          r"\(HTTP 404"),
    "a server that fails (500)": ("500", 4, r"failed: http://127\.0\.0\.1:\d+/DEFAULT/controller/v1/bad-500: the "
                                            r"server failed \(HTTP 500"),
    "HTML instead of JSON": ("html", 4, r"refused: GET .*/bad-html: an HTML page, not DDI JSON"),
    "an artifact that is not a bank": ("notbank", 4, r"refused: .*/download: an SWUpdate \.swu, but not one bankboot "
                                                     r"made \(no bankboot\.json after sw-description"),
    "an artifact for another board": ("board", 4, r"refused: .*/download is for board raspberrypi3; this device is "
                                                  r"qemu-aarch64"),
    "an artifact on another host that refuses": ("host", 4, r"refused: the artifact http://127\.0\.0\.1:\d+/other\."
                                                            r"swu is on another host than the DDI server .* and "
                                                            r"refused "
                                                            r"the download \(HTTP 401\): bankctl sends the device's "
                                                            r"token to the DDI server only"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_servers_and_artifacts_change_nothing(case: str, server: Goosebit, release: Release, swus, tmp_path: Path,
                                                  capsys) -> None:
    kind, want_rc, message = CASES[case]
    names = {"token": "bad-401", "tenant": "bad-404", "500": "bad-500", "html": "bad-html"}
    controller = names.get(kind, f"bad-{kind}")
    dev = device(tmp_path, release, token="tok-wrong" if kind == "token" else None)
    url, tenant = server.url, "DEFAULT"
    with DdiProxy(server.port) as proxy:
        if kind == "token":
            server.register([controller], auth_token="tok-right")
        elif kind == "tenant":
            tenant = "nosuch"
        elif kind in ("500", "html"):
            url = proxy.url
            proxy.fault = (lambda r: Answer(500, [("Content-Type", "text/plain")], b"Internal Server Error")) \
                if kind == "500" else (lambda r: Answer(200, [("Content-Type", "text/html")],
                                                        b"<!DOCTYPE html><html><title>Sign in</title></html>"))
        else:
            registered(server, device(tmp_path, release), controller)
            if kind == "notbank":
                sid = server.upload(not_a_bank(tmp_path))
            elif kind == "board":
                sid = server.upload(altered(swus["1.1.0"], tmp_path / "board.swu", "1.3.0", "raspberrypi3"))
            else:
                refusing = RefusingHost(altered(swus["1.1.0"], tmp_path / "other.swu", "1.4.0"))
                sid = server.upload(url=refusing.url)
            server.assign([controller], sid)
        before = snapshot(tmp_path / "dev")
        rc, out = poll_rc(dev, url, controller, capsys, tenant)
    assert rc == want_rc and re.search(message, out), out
    assert snapshot(tmp_path / "dev") == before
    if kind in ("notbank", "board", "host"):  # the server's record says why, too
        d = server.devices()[controller]
        assert d["last_state"] == "Error" and "bankctl:" in server.device_log(controller), d


def test_a_target_token_is_sent(server: Goosebit, release: Release, tmp_path: Path) -> None:
    server.register(["tok1"], auth_token="tok-right")
    assert once(device(tmp_path, release, token="tok-right"), server.url, "tok1").action == "nothing"
    assert server.devices()["tok1"]["hardware"]["model"] == BOARD


@pytest.mark.parametrize("sleep,said", [("00:00:00", "shorter than 5 s, polling every 5 s instead"),
                                        ("8760:00:00", "longer than 7 days .* polling every 7 days instead")])
def test_a_polling_sleep_of_zero_or_a_year_is_bounded(sleep: str, said: str, server: Goosebit, release: Release,
                                                      tmp_path: Path) -> None:
    with DdiProxy(server.port) as proxy:
        def change(req, ans: Answer) -> Answer:
            doc = json.loads(ans.body) if ans.body and req.path.endswith("/sleepy") else None
            if isinstance(doc, dict) and "config" in doc:
                doc["config"]["polling"]["sleep"] = sleep
                return json_answer(doc)
            return ans

        proxy.change = change
        lines: list[str] = []
        got = once(device(tmp_path, release), proxy.url, "sleepy", lines)
    assert re.search(said, " ".join(lines)), lines
    assert got.interval == (5 if sleep == "00:00:00" else 7 * 86400)


def test_publish_format_swu_from_the_command_line(release: Release, tmp_path: Path) -> None:
    import sys

    cmd = [sys.executable, "-m", "builder.cli", "publish", str(release.banks["1.1.0"]), "--format", "swu"]
    ok = subprocess.run([*cmd, str(tmp_path / "a.swu"), "--board", BOARD, "--hw-revision", "1.0"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "1.1.0 (image" in ok.stdout, ok.stderr
    assert b'hardware-compatibility = [ "1.0" ];' in (tmp_path / "a.swu").read_bytes()[:1024]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.swu"]  # no temp file left
    bad = subprocess.run([*cmd, str(tmp_path / "b.swu"), "--board", "qemu-x86_64"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--board qemu-x86_64 is an amd64 board" in bad.stderr, bad.stderr
    assert not (tmp_path / "b.swu").exists()
