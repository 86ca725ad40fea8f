"""Update lifecycle scenarios on qemu-aarch64: a device with image 1.0.0 gets an update on a second disk
(like a USB stick) and stages it with the bankctl the init installed; the test drives reboots and reads
what the booted system and bankctl say."""

from __future__ import annotations

import json
import re

import pytest

from tests.vm.devices import Device, T, reboot, sh, state_of, status, up, update_to

pytestmark = pytest.mark.vm


def test_good_update_commits_after_mark_good_and_esc_or_select_boots_previous_once(device) -> None:
    d = Device(device, "good", "good")
    with d.vm() as vm:
        assert up(vm) == "1.0.0"
        rc, out = sh(vm, "bankctl stage /dev/vdb --tries 2")
        assert rc == 0, out
        # The stage hashed with the kernel's ARMv8 SHA-256 (the known digest came back from its crypto socket):
        # the module is loaded and sha256-ce is the kernel's sha256.
        assert "hashing with the kernel's SHA-256 (sha256-ce)" in out, out
        rc, out = sh(vm, "grep -c '^algif_hash ' /proc/modules; grep -A2 '^name *: sha256$' /proc/crypto")
        assert rc == 0 and out.split()[0] == "1" and "sha256-ce" in out, out
        st = status(vm)
        assert state_of(st, "1.1.0")["state"] == "trial" and st["pointers"]["next"] == state_of(st, "1.1.0")["id"]
        reboot(vm)
        assert up(vm) == "1.1.0"
        assert "trial boot; marked good" in vm.console.text()
        # The trial's first boot hashed the whole image with the kernel too (loaded before the hash).
        assert "hashing with the kernel's SHA-256 (sha256-ce)" in vm.console.text()
        rc, out = sh(vm, "grep -c '^algif_hash ' /proc/modules")
        assert rc == 0 and out.strip() == "1", out
        st = status(vm)
        assert state_of(st, "1.1.0")["pointers"] == ["current"]
        assert state_of(st, "1.0.0")["pointers"] == ["previous"]
        reboot(vm)
        assert up(vm) == "1.1.0"  # committed: boots again without a trial
        rc, out = sh(vm, "cat /run/bankboot/booted")
        assert json.loads(out)["trial"] is False
        # ESC at the console, ESC again in the menu: previous, for this boot.
        reboot(vm)
        vm.console.expect(r"Press ESC for the boot menu", T)
        vm.console.send(b"\x1b")
        vm.console.expect(r"bankboot boot menu", 30)
        vm.console.expect(r"choice: ", 30)
        vm.console.send(b"\x1b")
        assert up(vm) == "1.0.0"
        rc, out = sh(vm, "cat /run/bankboot/booted")
        assert "console menu" in json.loads(out)["why"]
    with d.vm(append="bankboot.select=previous bankboot.timeout=0") as vm:
        assert up(vm) == "1.0.0"
    with d.vm(append="bankboot.timeout=0") as vm:
        assert up(vm) == "1.1.0"  # a selection is for one boot only


def test_failing_selftest_falls_back_in_the_same_boot(device) -> None:
    d = Device(device, "selftest", "selftest-fails")
    with d.vm() as vm:
        assert up(vm) == "1.0.0"
        rc, out = sh(vm, "bankctl stage /dev/vdb")
        assert rc == 0, out
        reboot(vm)
        vm.console.expect(r"self-test .*50-fails failed with exit status 7", T)
        assert up(vm) == "1.0.0"  # no extra reboot: straight into current
        st = status(vm)
        bad = state_of(st, "1.2.0")
        assert bad["state"] == "bad" and "50-fails" in bad["reason"] and st["pointers"]["next"] is None
        rc, out = sh(vm, "bankctl log --json")
        record = json.loads(out)[0]
        assert "self-test failed" in record["fallback_from"]["reason"]
        assert [t["image"] for t in record["tried"]] == [bad["id"]]


def test_update_that_never_marks_good_falls_back_after_its_tries(device) -> None:
    d = Device(device, "nomark", "no-mark-good")
    with d.vm() as vm:
        assert up(vm) == "1.0.0"
        rc, out = sh(vm, "bankctl stage /dev/vdb --tries 2")
        assert rc == 0, out
        for _ in range(2):
            reboot(vm)
            assert up(vm) == "1.3.0"
        reboot(vm)
        assert up(vm) == "1.0.0"
        st = status(vm)
        assert state_of(st, "1.3.0")["state"] == "bad"
        assert "no tries left" in state_of(st, "1.3.0")["reason"]


def test_esc_esc_while_modules_load_on_a_fresh_device_opens_the_menu_and_boots_current(device) -> None:
    """The ESC window opens as the init starts (the prompt is shown before modules load) and keys typed then
    wait in the console: the menu opens once the banks partition is read. A disk fresh from `bankboot disk`
    has no previous: ESC ESC (one fast double press, one read) opens the menu and asks for previous, which is
    a warning, and current boots: never a shell."""
    d = Device(device, "esc-fresh", None)
    with d.vm() as vm:
        vm.console.expect(r"Press ESC for the boot menu", T)
        before = vm.console.text()
        vm.console.send(b"\x1b\x1b")
        assert not re.search(r"loaded \d+ kernel modules", before), "modules were loaded before the key was sent"
        vm.console.expect(r"bankboot boot menu", 30)
        text = vm.console.text()
        assert re.search(r"loaded \d+ kernel modules", text[:text.index("bankboot boot menu")])
        assert up(vm) == "1.0.0"
        rc, out = sh(vm, "cat /run/bankboot/booted; echo; readlink /proc/1/exe")
        assert rc == 0, out
        booted = json.loads(out.splitlines()[0])
        assert booted["why"] == "current" and out.splitlines()[1].endswith("busybox")
        assert any("no previous image" in w for w in booted["warnings"])


def test_corrupt_or_truncated_update_is_refused_and_never_booted(device) -> None:
    d = Device(device, "corrupt", None)
    good = d.banks["good"][0].read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    (d.dir / "flipped.bank").write_bytes(bytes(flipped))
    (d.dir / "truncated.bank").write_bytes(good[: (len(good) // 2) // 512 * 512])
    vm = d.vm(append="bankboot.timeout=0")
    vm.disks.extend([d.dir / "flipped.bank", d.dir / "truncated.bank"])  # /dev/vdb, /dev/vdc
    with vm:
        assert up(vm) == "1.0.0"
        for disk, message in [("vdb", "does not match"), ("vdc", "truncated")]:
            rc, out = sh(vm, f"bankctl stage /dev/{disk} 2>&1")
            assert rc == 4 and message in out, out
            st = status(vm)
            assert st["pointers"]["next"] is None and [i["version"] for i in st["images"]] == ["1.0.0"]
            rc, out = sh(vm, "ls -a /run/bankboot/banks/overlay")
            assert ".staging" not in out
        reboot(vm)
        assert up(vm) == "1.0.0"


def test_reset_empties_the_upper_and_keeps_userdata(device) -> None:
    d = Device(device, "reset", None)
    with d.vm(append="bankboot.timeout=0") as vm:
        assert up(vm) == "1.0.0"
        rc, _ = sh(vm, "echo mine > /etc/changed && echo kept > /userdata/kept")
        assert rc == 0
        rc, out = sh(vm, "bankctl reset")
        assert rc == 0, out
        reboot(vm)
        vm.console.expect(r"reset: upper emptied", T)
        assert up(vm) == "1.0.0"
        rc, out = sh(vm, "cat /etc/changed 2>&1; cat /userdata/kept")
        assert "No such file" in out and "kept" in out


def test_watchdog_resets_a_trial_that_hangs_and_it_falls_back(device) -> None:
    """The trial never marks itself good and nothing pets the watchdog the init armed: the hardware resets
    the board without anyone typing reboot, and with its one try spent the next boot is current again."""
    d = Device(device, "watchdog", "no-mark-good")
    with d.vm(append="bankboot.watchdog=10 bankboot.timeout=0") as vm:
        assert up(vm) == "1.0.0"
        rc, out = sh(vm, "bankctl stage /dev/vdb --tries 1")
        assert rc == 0, out
        reboot(vm)
        vm.console.expect(r"watchdog armed for 10 s", T)
        # The trial's version as its own rcS prints it: a command could still be waiting for its answer when
        # the watchdog resets the board on a loaded host.
        vm.console.expect(r"sample-rootfs: up, version 1\.3\.0", T)
        vm.console.expect(r"Booting Linux", 60)  # nobody typed reboot: the watchdog did it
        assert up(vm) == "1.0.0"
        st = status(vm)
        assert state_of(st, "1.3.0")["state"] == "bad"


def test_a_committed_image_that_never_confirms_its_boots_gives_way_to_previous(device) -> None:
    """1.4.0 commits itself but never runs `bankctl boot-ok` (it asks for it in its signed manifest): after
    the board's 3 unconfirmed boots, the 4th boots previous, which becomes current."""
    d = Device(device, "unconfirmed", "no-boot-ok")
    with d.vm(append="bankboot.timeout=0") as vm:
        update_to(vm, "1.4.0")  # the trial, marked good by the image
        for n in (1, 2, 3):
            reboot(vm)
            assert up(vm) == "1.4.0"
            assert state_of(status(vm), "1.4.0")["unconfirmed_boots"] == n
        reboot(vm)
        assert up(vm) == "1.0.0"
        st = status(vm)
        assert st["pointers"]["current"] == state_of(st, "1.0.0")["id"]
        assert state_of(st, "1.4.0")["state"] == "bad"
        assert "without `bankctl boot-ok`" in state_of(st, "1.4.0")["reason"]
        rc, out = sh(vm, "bankctl log --json")
        assert rc == 0 and "boots in a row without" in json.loads(out)[0]["notes"]
        assert state_of(st, "1.0.0")["unconfirmed_boots"] == 0  # 1.0.0 confirms its boots
