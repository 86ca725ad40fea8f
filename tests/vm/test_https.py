"""HTTPS in the guest (qemu-aarch64): the frozen bankctl loads its TLS piece from the boot partition and
stages from Debian's nginx, which requires a client certificate (mTLS), checking the server against the
running image's CA bundle; the guest's address changes mid-download (the NIC taken down and brought up
with another address) and the stage goes on after the byte it had. The errors a device meets first: a
CA it does not know, no client certificate. Asserted on what the guest reports (bankctl's exit status and
words, its address, the banks partition's listing, `bankctl status`)."""

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
from builder.lab.serve import Server, ServeTls
from builder.tls import make_ca, make_cert
from tests.vm.devices import T, sh, up

pytestmark = pytest.mark.vm
BIG = 16 << 20
CLIENT = "--cert /userdata/device.pem --key /userdata/device.key"


@pytest.fixture(scope="module")
def https_device(aarch64, test_dir: Path, built_initramfs, signing_key):
    board = aarch64.board
    out = test_dir / "https"
    shutil.rmtree(out, ignore_errors=True)
    www, pki, userdata = out / "www", out / "pki", out / "userdata"
    for d in (www, userdata):
        d.mkdir(parents=True)
    ca = make_ca(pki)
    server = make_cert(ca, pki, "server", ("10.0.2.2",))
    device = make_cert(ca, pki, "device", client=True)
    other = make_ca(out / "other", "some other CA")
    for src, name in ((device[0], "device.pem"), (device[1], "device.key"), (other[0], "other-ca.pem")):
        shutil.copyfile(src, userdata / name)
    sign = {"sign_key": signing_key.private, "confirm_boots": True, "persist": SAMPLE_PERSIST}
    base = build_sample_rootfs(board.arch, out / "rootfs-1.0.0", version="1.0.0")
    (base / "etc/ssl/certs").mkdir(parents=True)
    shutil.copyfile(ca[0], base / "etc/ssl/certs/ca-certificates.crt")  # the image's own CA bundle
    build_image(base, "1.0.0", out / "app-1.0.0.bank", **sign)
    rootfs = build_sample_rootfs(board.arch, out / "rootfs", version="1.2.0")
    (rootfs / "usr/share").mkdir(parents=True, exist_ok=True)
    (rootfs / "usr/share/big").write_bytes(random.Random(20).randbytes(BIG))
    m12 = build_image(rootfs, "1.2.0", www / "app-1.2.0.bank", **sign)
    disk = out / "disk.img"
    build_disk(board, out / "app-1.0.0.bank", disk, 512 << 20, built_initramfs(board),
               userdata_files=[userdata / n for n in ("device.pem", "device.key", "other-ca.pem")])
    return board, out, www, disk, m12, ServeTls(server[0], server[1], client_ca=ca[0])


def wait_for(vm, pattern: str, timeout: float) -> re.Match[str]:
    """Poll the background stage's log in the guest until `pattern` shows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, text = sh(vm, "cat /tmp/stage.log")
        found = re.search(pattern, text)
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"no {pattern!r} in the guest's stage log:\n{text[-2000:]}")


def test_https_with_a_client_certificate_survives_an_address_change(https_device) -> None:
    board, out, www, disk, m12, tls = https_device
    with Server(www, rate="2m", tls=tls) as srv:
        url = srv.url("app-1.2.0.bank", host="10.0.2.2")
        with disk_vm(board, disk, out / "run", net=True) as vm:
            assert up(vm) == "1.0.0"
            rc, text = sh(vm, f"bankctl stage --retries 0 --ca /userdata/other-ca.pem {CLIENT} {url}")
            assert rc == 4 and "not signed by a CA this device trusts" in text, text
            rc, text = sh(vm, f"bankctl stage --retries 0 {url}")
            assert rc == 4 and "HTTP 400" in text and "client certificate" in text, text
            rc, listing = sh(vm, "ls -a /run/bankboot/banks/overlay/")
            assert rc == 0 and ".download-" not in listing, listing  # refused before a byte: nothing left

            vm.console.sendline(f"(bankctl stage --timeout 5 {CLIENT} {url}; echo STAGE-EXIT=$?) >/tmp/stage.log "
                                f"2>&1 &")
            wait_for(vm, r"staging \[#{5}", T)  # 20% and more
            rc, text = sh(vm, "ip addr del 10.0.2.15/24 dev eth0; ip link set eth0 down; sleep 1; "
                              "ip link set eth0 up; ip addr add 10.0.2.16/24 dev eth0; ip route add default via "
                              "10.0.2.2; ip -4 addr show eth0")
            assert rc == 0 and "10.0.2.16" in text and "10.0.2.15" not in text, text
            exit_code = wait_for(vm, r"STAGE-EXIT=(\d+)", 4 * T).group(1)
            _, log = sh(vm, "cat /tmp/stage.log")
            assert exit_code == "0" and f"staged {m12['id']}" in log, log[-3000:]
            assert "retrying in" in log, log[-3000:]  # the link did break
            received = float(re.search(r"([\d.]+) MB received in all", log).group(1))
            assert received < m12["size"] / 1e6 * 1.05 + 0.5, log[-3000:]  # little fetched twice
            rc, status = sh(vm, "bankctl status --json")
            assert rc == 0 and f'"next": "{m12["id"]}"' in status, status
    requests = srv.requests()
    assert all(" 206 " in line or " 400 " in line for line in requests), requests
