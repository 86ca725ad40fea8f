"""A real Debian 12 root filesystem (mmdebstrap) as a two-layer OCI image, the upper layer deleting a file
(a whiteout), replacing a directory (an opaque marker) and adding a unit that reports what the boot sees:
its bank, pulled from a loopback registry, boots to Debian's systemd, which reports from inside the guest.
That every route (an OCI layout, a docker-archive, a registry) gives the same bank byte for byte, for one layer
and for several with whiteouts, is proven on the host with small images (tests/host/test_image_sources.py,
tests/host/test_layers.py, which also checks the merged tree against umoci's): a Debian-sized squashfs per
route would cost minutes of `make test` and prove nothing more."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from builder.disk import build_disk
from builder.image import build_image
from builder.lab.boot import disk_vm
from tests.debian import debian_rootfs
from tests.images import Entry, oci_image, write_layer
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
    """The layered Debian image as an OCI layout (its skopeo reference) and the directory it lives in."""
    out = test_dir / "debian-image"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir()
    base = debian_rootfs("arm64")
    upper = write_layer(out / "upper.tar", UPPER)
    ref = oci_image(out / "oci", "debian", [base, upper])
    return {"oci": ref, "dir": str(out)}


def test_a_debian_image_from_a_registry_boots_to_its_systemd(debian_image, aarch64, built_initramfs, signing_key,
                                                                 test_dir: Path, monkeypatch) -> None:
    board, _, _ = aarch64
    out = Path(debian_image["dir"])
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)  # the image's creation time makes it reproducible
    with Registry(out / "registry") as registry:
        url = registry.push(debian_image["oci"], "bankboot/debian:12")
        for var, value in registry.env().items():
            monkeypatch.setenv(var, value)
        m = build_image(None, "12.0.0", out / "debian.bank", source=url, sign_key=signing_key.private,
                        say=lambda _: None)
    assert m["created"] == "2024-03-01T12:00:00Z" and m["arch"] == "arm64"
    # One boot, of that bank.
    disk = out / "disk.img"
    build_disk(board, out / "debian.bank", disk, 512 << 20, built_initramfs(board))
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
