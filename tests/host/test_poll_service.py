"""The poll service in an image (builder/pollservice.py): the systemd unit passes `systemd-analyze verify`
in a root that has what it names, and the busybox init script, run by the sample image's own busybox (the
host's architecture) in a chroot, starts `bankctl poll` with what poll.conf says, only on a bankboot boot."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from builder.board import load_board
from builder.lab.samplerootfs import build_sample_rootfs
from builder.pollservice import INIT_SCRIPT, UNIT, UNIT_NAME, install_poll_service, poll_conf


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "run/bankboot/bin").mkdir(parents=True)
    (root / "run/bankboot/bin/bankctl").write_text("#!/bin/sh\n")
    (root / "run/bankboot/bin/bankctl").chmod(0o755)
    (root / "lib/systemd").mkdir(parents=True)
    (root / "lib/systemd/systemd").write_text("")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    install_poll_service(root, "https://updates.example.com/fleet/stable.json")
    assert (root / "etc/systemd/system" / UNIT_NAME).read_text() == UNIT
    assert (root / "etc/systemd/system/multi-user.target.wants" / UNIT_NAME).is_symlink()
    got = subprocess.run(["systemd-analyze", "verify", f"--root={root}", UNIT_NAME], capture_output=True, text=True)
    assert got.returncode == 0, got.stdout + got.stderr
    broken = root / "etc/systemd/system" / UNIT_NAME
    broken.write_text(UNIT.replace("ExecStart=/run", "ExecStart=run"))  # the check can fail
    assert subprocess.run(["systemd-analyze", "verify", f"--root={root}", UNIT_NAME], capture_output=True).returncode


def test_poll_conf_is_refused_where_sh_and_systemd_would_read_it_differently() -> None:
    assert poll_conf("http://h/stable.json", "5s", "--reboot") == \
        'URL=http://h/stable.json\nEVERY=5s\nOPTIONS="--reboot"\n'
    for bad in ("http://h/$x.json", "http://h/a\"b"):
        with pytest.raises(ValueError, match="systemd and sh read it alike"):
            poll_conf(bad)


def test_the_init_script_starts_the_poller_on_a_bankboot_boot(tmp_path: Path) -> None:
    rootfs = build_sample_rootfs(load_board("qemu-x86_64").arch, tmp_path / "rootfs")  # the host's busybox
    install_poll_service(rootfs, "http://10.0.2.2:8080/stable.json", "5s", "--reboot --download-only")
    fake = rootfs / "run/bankboot/bin/bankctl"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho \"$@\" >/tmp/args\nsleep 30\n")
    fake.chmod(0o755)
    os.mknod(rootfs / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a booted image has devtmpfs

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", command], capture_output=True, text=True,
                              timeout=60)

    first = sh(f"{INIT_SCRIPT} start")
    assert (first.returncode, first.stdout) == (0, "") and not (rootfs / "tmp/args").exists()  # not a bankboot boot
    (rootfs / "run/bankboot/booted").write_text('{"image": "x"}')
    started = sh(f"{INIT_SCRIPT} start")
    assert "polling http://10.0.2.2:8080/stable.json every 5s" in started.stdout, started
    deadline = time.monotonic() + 20
    while not (rootfs / "tmp/args").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (rootfs / "tmp/args").read_text() == "poll --every 5s --reboot --download-only " \
                                                "http://10.0.2.2:8080/stable.json\n"
    assert sh(f"{INIT_SCRIPT} status").returncode == 0
    sh(f"{INIT_SCRIPT} stop")
    assert sh(f"{INIT_SCRIPT} status").returncode == 3
