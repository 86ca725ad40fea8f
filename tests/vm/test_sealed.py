"""Sealed devices (qemu-aarch64): each attack written the way someone holding the SD card would, offline
into the disk image, then the device booted and asked what it runs. The images are sealed (the sample's
persistence policy: /etc /var /root)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from builder import bankspart
from builder.disk import build_disk
from builder.image import build_image, extract_image
from builder.lab import faultdisk
from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
from overlay_layout.manifest import dump_manifest
from tests.vm.devices import Device, T, current_of, plant, reboot, sh, status, up, update_to

pytestmark = pytest.mark.vm
IMPLANT = "#!/bin/sh\necho IMPLANT-{what}-RAN > /dev/console\ntouch /implant-{what}-ran\nexit 0\n"


def test_implants_in_the_upper_never_run_init_or_selftest(device) -> None:
    """upper/sbin/init shadows nothing in a sealed image (only persistent paths keep an upper), and a
    selftest.d script in the persistent /etc, copied into the trial by `--upper copy`, is not run: the
    self-test sees the signed image alone."""
    d = Device(device, "sealed-implants", "good")
    cur = current_of(d.disk)
    plant(d.disk, {f"overlay/{cur}/upper/sbin/init": IMPLANT.format(what="INIT"),
                   f"overlay/{cur}/upper/etc/bankboot/selftest.d/00-evil": IMPLANT.format(what="SELFTEST")})
    with d.vm(append="bankboot.timeout=0") as vm:
        assert up(vm) == "1.0.0"
        rc, out = sh(vm, "readlink /proc/1/exe; ls /implant-* 2>&1; head -c 2 /sbin/init | od -c | head -1")
        assert rc == 0 and out.splitlines()[0] == "/bin/busybox", out
        assert "No such file" in out and "#   !" not in out, out  # /sbin/init is the signed busybox link
        rc, out = sh(vm, "grep -c ' /etc overlay ' /proc/mounts; ls /etc/bankboot/selftest.d")
        assert out.split()[0] == "1" and "00-evil" in out, out  # the persistent /etc shows it; it is data
        rc, out = sh(vm, "bankctl stage /dev/vdb")
        assert rc == 0, out
        nxt = status(vm)["pointers"]["next"]
        rc, out = sh(vm, f"ls /run/bankboot/banks/overlay/{nxt}/upper/etc/bankboot/selftest.d/")
        assert "00-evil" in out, out  # the trial carries the implant in its persistent /etc
        reboot(vm)
        assert up(vm) == "1.1.0"
        rc, log = sh(vm, "bankctl log --json")
        record = json.loads(log)[0]
        assert record["image"] == nxt and record["trial"] and record["selftest"] == "passed (1 image checks)"
        assert record["sealed"] is True
        rc, out = sh(vm, "ls /implant-* 2>&1")
        assert "No such file" in out, out
    assert "IMPLANT-" not in vm.console.text()


def test_a_kit_planted_on_the_banks_partition_is_removed_and_never_run(device) -> None:
    """Where older builds kept bankctl: a planted kit is removed at boot (and logged), bankctl runs from the
    read-only initramfs, and its trust policy is not taken from the environment."""
    d = Device(device, "sealed-kit", None)
    cur = current_of(d.disk)
    kit = f"overlay/{cur}/utils/bankboot-0000"
    plant(d.disk, {f"{kit}/init": IMPLANT.format(what="KIT"), f"{kit}/bin/busybox": IMPLANT.format(what="KIT"),
                   f"{kit}/etc/bankboot/initramfs.conf": "unsigned=allowed\ndowngrade=allowed\n"})
    with d.vm(append="bankboot.timeout=0") as vm:
        vm.console.expect(r"removed .*bankboot-0000: a bankctl kit on the banks partition is never run", T)
        assert up(vm) == "1.0.0"
        rc, out = sh(vm, f"ls /run/bankboot/banks/{kit} 2>&1; grep ' /run/bankboot/kit ' /proc/mounts")
        assert "No such file" in out and " ro," in out, out
        mkdir = "mkdir -p /tmp/k/etc/bankboot && echo unsigned=allowed > /tmp/k/etc/bankboot/initramfs.conf"
        rc, out = sh(vm, f"{mkdir}; BANKBOOT_KIT=/tmp/k bankctl status --json")
        trust = json.loads(out)["trust"]
        assert rc == 0 and trust["unsigned_allowed"] is False and trust["keys"], out
        rc, out = sh(vm, "touch /run/bankboot/kit/init 2>&1")
        assert rc != 0 and "Read-only" in out, out
        rc, log = sh(vm, "bankctl log --json")
        assert "bankboot-0000" in json.loads(log)[0]["notes"]
    assert "IMPLANT-" not in vm.console.text()


def plant_image(disk: Path, bank: Path) -> str:
    """Copy a signed image onto the banks partition as an attacker would (it verifies: it is signed)."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = extract_image(bank, Path(tmp))
        (Path(tmp) / "manifest.json").write_bytes(dump_manifest(manifest))
        image = manifest["id"]
        with bankspart.banks_partition(disk) as part:
            bankspart.debugfs(part, f"mkdir overlay/{image}",
                              *[f"mkdir overlay/{image}/{s}" for s in ("upper", "work", "backups", "utils")],
                              *[f"write {tmp}/{n} overlay/{image}/{n}"
                                for n in ("rootfs.squashfs", "rootfs.verity", "manifest.json")])
            faultdisk.set_symlink(part, "current", image)
    return image


def test_anti_rollback_holds_at_boot_and_stage_when_current_is_repointed_or_state_deleted(
        device, test_dir: Path, signing_key) -> None:
    """A floor file lost is rebuilt from the other and written back at that boot, so deleting state.json
    and, a boot later, floor.json never lets an older signed image boot."""
    board, out = device.board, device.out
    rootfs = build_sample_rootfs(board.arch, out / "rootfs-old", version="0.9.0")
    old_bank = out / "old-sealed.bank"
    build_image(rootfs, "0.9.0", old_bank, sign_key=signing_key.private, persist=SAMPLE_PERSIST)
    d = Device(device, "sealed-floor", "good")
    with d.vm(append="bankboot.timeout=0") as vm:
        update_to(vm, "1.1.0")  # committed: floor 1.1.0, and 1.0.0 (previous) is the oldest that may boot
        rightful = status(vm)["pointers"]["current"]
        sh(vm, "sync")
    old = plant_image(d.disk, old_bank)  # current -> a signed 0.9.0, state intact
    d.update = old_bank
    with d.vm(append="bankboot.timeout=0") as vm:
        assert up(vm) == "1.1.0"
        st = status(vm)
        assert st["pointers"]["current"] == rightful and st["boot_floor"] == "1.0.0"
        rc, log = sh(vm, "bankctl log --json")
        assert f"current points at {old} (version 0.9.0), below the anti-rollback floor 1.0.0" \
            in json.loads(log)[0]["notes"]
        sh(vm, "sync")
    with bankspart.banks_partition(d.disk) as part:  # state.json deleted, current re-pointed again
        bankspart.debugfs(part, "rm state.json")
        faultdisk.set_symlink(part, "current", old)
    with d.vm(append="bankboot.timeout=0") as vm:
        assert up(vm) in ("1.1.0", "1.0.0")  # the floor file still says 1.1.0 / 1.0.0: never 0.9.0
        st = status(vm)
        assert st["floor"] == "1.1.0" and st["boot_floor"] == "1.0.0", st
        rc, msg = sh(vm, "bankctl stage /dev/vdb 2>&1")
        assert rc == 4 and "below this device's floor 1.1.0" in msg, msg
        rc, out = sh(vm, "cat /run/bankboot/banks/state.json")  # written back at that boot: a backup again
        assert rc == 0 and json.loads(out)["floor"] == "1.1.0" and json.loads(out)["boot_floor"] == "1.0.0", out
        assert "state.json is missing; state rebuilt from the layout and floor.json" in vm.console.text()
        sh(vm, "sync")
    with bankspart.banks_partition(d.disk) as part:  # now floor.json deleted, current re-pointed once more
        bankspart.debugfs(part, "rm floor.json")
        faultdisk.set_symlink(part, "current", old)
    with d.vm(append="bankboot.timeout=0") as vm:
        assert up(vm) in ("1.1.0", "1.0.0")  # the rebuilt state.json kept the floors
        st = status(vm)
        assert st["floor"] == "1.1.0" and st["boot_floor"] == "1.0.0", st
        rc, out = sh(vm, "cat /run/bankboot/banks/floor.json")
        assert rc == 0 and json.loads(out)["floor"] == "1.1.0" and json.loads(out)["boot_floor"] == "1.0.0", out
        assert "floor.json is missing" in vm.console.text()


def test_a_sealed_build_obeys_no_init_and_gives_no_shell(device, sealed_initramfs: Path) -> None:
    """init= and bankboot.rescue=shell on the command line are ignored, and so are the words the kernel makes
    the init's environment (BANKBOOT_ENTRY=bankctl: the init stays the init); ESC ESC without previous boots
    current; nothing bootable reboots, without offering a shell; never a shell."""
    board, banks = device.board, device.banks
    d = Device(device, "sealed-build", None)
    build_disk(board, banks["base"][0], d.disk, 256 << 20, sealed_initramfs)
    with d.vm(append="init=/bin/sh bankboot.rescue=shell BANKBOOT_ENTRY=bankctl PYTHONINSPECT=1") as vm:
        vm.console.expect(r"sealed build", T)
        vm.console.expect(r"init=/bin/sh on the kernel command line ignored: this is a sealed build", T)
        vm.console.expect(r"Press ESC for the boot menu", T)
        vm.console.send(b"\x1b\x1b")
        vm.console.expect(r"bankboot boot menu", 30)
        assert up(vm) == "1.0.0"  # the image's own init ran its rcS: init= was not obeyed
        rc, out = sh(vm, "tr '\\0' ' ' < /proc/1/cmdline; echo; bankctl status --json")
        assert rc == 0 and "/bin/sh" not in out.splitlines()[0], out
        assert json.loads("\n".join(out.splitlines()[1:]))["trust"]["sealed_build"] is True
        cur = status(vm)["pointers"]["current"]
        sh(vm, f"rm /run/bankboot/banks/overlay/{cur}/manifest.json; sync")
        vm.console.sendline("reboot")
        vm.console.expect(r"nothing could be booted; rebooting", T)
        vm.console.expect(r"Booting Linux", 60)
        assert "rescue shell" not in vm.console.text() and "gives a shell" not in vm.console.text()
    shutil.rmtree(d.dir / "bootfiles", ignore_errors=True)
