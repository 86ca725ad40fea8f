"""Staging over the network (`bankctl stage URL`), from Debian's nginx on the host through QEMU's user-mode
network: the link is cut half-way and the download resumes; the next update fetches only what changed.
Asserted on what the guest reports (its version, bankctl's own accounting) and on nginx's access log."""

from __future__ import annotations

import random
import re
import shutil
import time
from pathlib import Path

import pytest

from builder.disk import build_disk
from builder.image import build_image
from builder.lab.boot import disk_vm
from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
from builder.lab.serve import Server
from tests.vm.devices import T, reboot, sh, up

pytestmark = pytest.mark.vm
BIG = 24 << 20  # an incompressible file in the update, so the download takes seconds


@pytest.fixture(scope="module")
def network(aarch64, test_dir: Path, built_initramfs, signing_key):
    board = aarch64.board
    out = test_dir / "network"
    shutil.rmtree(out, ignore_errors=True)
    www = out / "www"
    www.mkdir(parents=True)
    sign = {"sign_key": signing_key.private, "confirm_boots": True, "persist": SAMPLE_PERSIST}
    base = build_sample_rootfs(board.arch, out / "rootfs-1.0.0", version="1.0.0")
    build_image(base, "1.0.0", out / "app-1.0.0.bank", **sign)
    rootfs = build_sample_rootfs(board.arch, out / "rootfs", version="1.2.0")
    (rootfs / "usr/share").mkdir(parents=True, exist_ok=True)
    (rootfs / "usr/share/big").write_bytes(random.Random(12).randbytes(BIG))
    m12 = build_image(rootfs, "1.2.0", www / "app-1.2.0.bank", **sign)
    (rootfs / "etc/sample-version").write_text("1.3.0\n")  # one changed file
    m13 = build_image(rootfs, "1.3.0", www / "app-1.3.0.bank", **sign)
    disk = out / "disk.img"
    build_disk(board, out / "app-1.0.0.bank", disk, 512 << 20, built_initramfs(board))
    return board, out, www, disk, m12, m13


def staged(url: str) -> str:
    """`bankctl stage URL`, its last lines (not the progress) and its exit status."""
    return f"bankctl stage {url} >/tmp/stage.log 2>&1; r=$?; tail -3 /tmp/stage.log; (exit $r)"


def fetched(out: str) -> tuple[float, float, float, float]:
    """bankctl's account: MB from the network, from local images, already there, received in all."""
    m = re.search(r"fetched: ([\d.]+) MB from the network.*?([\d.]+) MB from images on this device, ([\d.]+) MB "
                  r"already downloaded by an earlier attempt; ([\d.]+) MB received", out, re.S)
    assert m, out
    return float(m.group(1)), float(m.group(2)), float(m.group(3)), float(m.group(4))


def test_stage_over_http_resumes_after_a_cut_link_and_a_power_cut_and_fetches_only_changes(network) -> None:
    board, out, www, disk, m12, m13 = network
    size_mb = m12["size"] / 1e6
    with Server(www, rate="2m") as srv:
        url = srv.url("app-1.2.0.bank", host="10.0.2.2")
        with disk_vm(board, disk, out / "run", reboot=True, net=True) as vm:
            assert up(vm) == "1.0.0"
            vm.console.sendline(f"bankctl stage --timeout 4 --retries 1 {url}; echo STAGE-EXIT=$?")
            vm.console.expect(r"staging \[", T)
            time.sleep(5)
            vm.set_link(False)  # the cable is pulled a third of the way in
            vm.console.expect(r"STAGE-EXIT=(\d+)", T)
            text = vm.console.text()
            assert "STAGE-EXIT=4" in text and "what was verified is kept" in text, text[-2000:]
            first = float(re.findall(r"([\d.]+) MB received, what was verified is kept", text)[-1])
            rc, listing = sh(vm, "ls -a /run/bankboot/banks/overlay/; bankctl status --json | grep -c '\"next\": null'")
            assert f".download-{m12['id']}" in listing and listing.strip().endswith("1"), listing
            vm.set_link(True)
            vm.console.sendline(f"bankctl stage {url}")
            kept = float(vm.console.expect(r"resuming: ([\d.]+) MB of", T).group(1))
            # the link cut costs only what was in flight: the bytes received that were not kept
            assert first - kept < 0.05 * size_mb, (first, kept)
            got = vm.console.expect(r"staging \[#{18}[^\]]*\]\s+(\d+)% ([\d.]+)/", T)  # 72% and more: the plug
            at_cut = float(got.group(2))
            vm.power_cut()
        with disk_vm(board, disk, out / "run-2", reboot=True, net=True) as vm:
            assert up(vm) == "1.0.0"
            rc, stage_out = sh(vm, staged(url))
            assert rc == 0 and f"staged {m12['id']}" in stage_out, stage_out
            network_mb, _, resumed_mb, received_mb = fetched(stage_out)
            # the power cut loses what was not yet fsynced (every MB) and the chunk being written
            assert at_cut - 1.2 < resumed_mb <= at_cut + 0.5, (at_cut, stage_out)
            assert network_mb + resumed_mb < size_mb + 0.1 and received_mb < size_mb - resumed_mb + 0.5
            reboot(vm)
            assert up(vm) == "1.2.0"  # the trial commits itself
            rc, stage_out = sh(vm, staged(srv.url("app-1.3.0.bank", host="10.0.2.2")))
            assert rc == 0, stage_out
            network_mb, local_mb, _, _ = fetched(stage_out)
            assert network_mb < 0.1 * m13["size"] / 1e6 and local_mb > 0.9 * m13["size"] / 1e6, stage_out
            reboot(vm)
            assert up(vm) == "1.3.0"
