"""A real Debian 12 root filesystem (mmdebstrap) as a two-layer OCI image, the upper layer deleting a file
(a whiteout), replacing a directory (an opaque marker) and adding a unit that reports what the boot sees:
it becomes the same bank from an OCI layout, a docker-archive and a loopback registry, and
that bank boots to Debian's systemd, which reports from inside the guest. The image exported as a plain
tarball (umoci unpacks it, tar packs it) gives a bank with the same tree. One boot: the routes' banks are
compared byte for byte on the host."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from builder.boot import disk_vm
from builder.disk import build_disk
from builder.image import build_image
from tests.debian import debian_rootfs
from tests.images import CREATED_EPOCH, Entry, oci_image, save_as, write_layer
from tests.registry import Registry

pytestmark = pytest.mark.vm
BOOT_TIMEOUT = 300

REPORT = r"""#!/bin/sh
# What this boot sees, on the console, then power off.
say() { echo "bankboot-report: $*" > /dev/console; }
say "pid1=$(cat /proc/1/comm) os=$(. /etc/os-release; echo $ID-$VERSION_ID) hostname=$(hostname)"
say "root=$(awk '$2 == "/" {print $3}' /proc/mounts) lower=$(awk '$2 == "/run/bankboot/lower" {print $3}' /proc/mounts)"
say "motd=$(test -e /etc/motd && echo present || echo absent)"
say "doc=$(ls /usr/share/doc/base-files | tr '\n' ' ')"
say "shadow=$(stat -c %U:%G:%a /etc/shadow) mail=$(stat -c %U:%G:%a /var/mail)"
say "null=$(test -c /dev/null && stat -c %t,%T /dev/null)"
say "done"
systemctl poweroff --no-block
"""
UNIT = """[Unit]
Description=bankboot test: report what this boot sees
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/bankboot-report
[Install]
WantedBy=multi-user.target
"""
UPPER = [
    Entry("etc", "dir"), Entry("etc/.wh.motd"),
    Entry("usr", "dir"), Entry("usr/share", "dir"), Entry("usr/share/doc", "dir"),
    Entry("usr/share/doc/base-files", "dir"), Entry("usr/share/doc/base-files/.wh..wh..opq"),
    Entry("usr/share/doc/base-files/README.bankboot", data=b"the upper layer's own\n"),
    Entry("usr/local", "dir", mode=0o755), Entry("usr/local/sbin", "dir", mode=0o755),
    Entry("usr/local/sbin/bankboot-report", data=REPORT.encode(), mode=0o755),
    Entry("etc/systemd", "dir"), Entry("etc/systemd/system", "dir"),
    Entry("etc/systemd/system/bankboot-report.service", data=UNIT.encode()),
    Entry("etc/systemd/system/multi-user.target.wants", "dir"),
    Entry("etc/systemd/system/multi-user.target.wants/bankboot-report.service", "symlink",
          target="/etc/systemd/system/bankboot-report.service"),
]


@pytest.fixture(scope="module")
def debian_image(test_dir: Path) -> dict[str, str]:
    """The layered Debian image as each kind of source (kind -> SOURCE), and its registry."""
    out = test_dir / "debian-image"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir()
    base = debian_rootfs("arm64")
    upper = write_layer(out / "upper.tar", UPPER)
    ref = oci_image(out / "oci", "debian", [base, upper])
    return {"oci": ref, "docker-archive": str(save_as(ref, "docker-archive", out / "docker.tar")), "dir": str(out)}


def listing(bank: Path, work: Path) -> list[str]:
    """The squashfs's tree with owners, modes, sizes and link targets (unsquashfs -lln), without times."""
    subprocess.run(["tar", "xf", str(bank), "-C", str(work), "rootfs.squashfs"], check=True)
    out = subprocess.run(["unsquashfs", "-lln", str(work / "rootfs.squashfs")], capture_output=True, text=True,
                         check=True).stdout
    (work / "rootfs.squashfs").unlink()
    return sorted(re.sub(r" \d{4}-\d\d-\d\d \d\d:\d\d ", " ", line) for line in out.splitlines() if line)


def test_a_debian_image_from_every_source_boots_to_its_systemd(debian_image, aarch64, built_initramfs, signing_key,
                                                                 test_dir: Path, monkeypatch) -> None:
    board, _, _ = aarch64
    out = Path(debian_image["dir"])
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)  # the image's creation time makes it reproducible
    banks: dict[str, tuple[dict, bytes]] = {}
    with Registry(out / "registry") as registry:
        url = registry.push(debian_image["oci"], "bankboot/debian:12")
        for var, value in registry.env().items():
            monkeypatch.setenv(var, value)
        for kind, source in [("oci", debian_image["oci"]), ("docker-archive", debian_image["docker-archive"]),
                             ("registry", url)]:  # oci-archive: tests/host/test_image_sources.py
            bank = out / f"{kind}.bank"
            said: list[str] = []
            m = build_image(None, "12.0.0", bank, source=source, sign_key=signing_key.private, say=said.append)
            banks[kind] = (m, bank.read_bytes())
    m, data = banks["oci"]
    assert m["created"] == "2024-03-01T12:00:00Z" and m["arch"] == "arm64"
    for kind, (other, other_data) in banks.items():
        assert other["id"] == m["id"] and other_data == data, kind
    # The same image exported as a plain tarball by other tools: the same tree (its order, so its bytes, differ).
    subprocess.run(["umoci", "raw", "unpack", "--image", debian_image["oci"].removeprefix("oci:"),
                    str(out / "unpacked")], check=True, capture_output=True)
    subprocess.run(["tar", "-C", str(out / "unpacked"), "--numeric-owner", "--xattrs", "--xattrs-include=*",
                    "-cf", str(out / "export.tar"), "."], check=True)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(CREATED_EPOCH))
    build_image(None, "12.0.0", out / "tarball.bank", source=str(out / "export.tar"), say=lambda _: None)
    assert listing(out / "tarball.bank", out) == listing(out / "oci.bank", out)
    # One boot, of that bank.
    disk = out / "disk.img"
    build_disk(board, out / "oci.bank", disk, 512 << 20, built_initramfs(board))
    with disk_vm(board, disk, out / "boot") as vm:
        vm.console.expect(r"Welcome to .*Debian GNU/Linux 12", BOOT_TIMEOUT)
        vm.console.expect(r"bankboot-report: done", BOOT_TIMEOUT)
        text = vm.console.text()
    report = dict(kv.split("=", 1) for line in re.findall(r"bankboot-report: (.*)", text) for kv in line.split()
                  if "=" in kv)
    assert report["pid1"] == "systemd" and report["os"] == "debian-12", report
    assert report["hostname"] == "bankboot-debian"
    assert report["root"] == "overlay" and report["lower"] == "squashfs", report
    assert report["motd"] == "absent"  # the upper layer's whiteout
    assert report["doc"].split() == ["README.bankboot"]  # its opaque directory: nothing of the lower one's
    # ownership, modes and device nodes as the Debian rootfs has them (not this machine's, not all root's)
    assert report["shadow"] == "root:shadow:640" and report["mail"] == "root:mail:2775", report
    assert report["null"] == "1,3", report
