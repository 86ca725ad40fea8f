"""Trust on the device (qemu-aarch64): stage refuses what its owner did not sign, and a squashfs changed
on the banks partition behind stage's back fails verification at boot and falls back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from builder.image import build_image
from builder.keys import keygen
from builder.lab.samplerootfs import build_sample_rootfs
from tests.vm.devices import Device, T, damage_squashfs, reboot, sh, status, up, update_to

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def bad_banks(device, test_dir: Path, signing_key):
    """Bank files stage must refuse, each for its own reason."""
    board, out, banks = device.board, device.out, device.banks
    rootfs = build_sample_rootfs(board.arch, out / "rootfs-trust", version="1.4.0")
    if not (out / "trust-other.key").exists():
        keygen(out / "trust-other", "a key the device does not trust")
    result = {
        "unsigned": (build_image(rootfs, "1.4.0", out / "unsigned.bank"), "is not signed"),
        "unknown-key": (build_image(rootfs, "1.4.0", out / "unknown-key.bank", sign_key=out / "trust-other.key"),
                        "which this device does not trust"),
        "old": (build_image(rootfs, "0.9.0", out / "old.bank", sign_key=signing_key.private),
                "below this device's floor"),
    }
    # Signed, then the squashfs changed: flip one byte of the squashfs inside the bank file.
    shutil.copyfile(banks["selftest-fails"][0], out / "changed.bank")  # 1.2.0: above the floor, not on disk
    data = bytearray((out / "changed.bank").read_bytes())
    data[1536 + 8192] ^= 0x01  # headers + manifest, then into the squashfs
    (out / "changed.bank").write_bytes(bytes(data))
    result["changed"] = (banks["selftest-fails"][1], "does not match the signed manifest")
    return result


def test_stage_refuses_unsigned_unknown_changed_and_old_images(device, bad_banks) -> None:
    d = Device(device, "trust-refuse", "good")
    out = d.dir.parent
    vm = d.vm(append="bankboot.timeout=0")
    vm.disks.extend(out / f"{name}.bank" for name in bad_banks)  # /dev/vdc, /dev/vdd, ... in this order
    with vm:
        assert up(vm) == "1.0.0"
        rc, msg = sh(vm, "bankctl stage /dev/vdb 2>&1")  # commit 1.1.0: the floor becomes 1.1.0
        assert rc == 0, msg
        reboot(vm)
        assert up(vm) == "1.1.0"
        assert status(vm)["trust"]["floor"] == "1.1.0"
        for disk, (name, (_, message)) in zip("cdef", bad_banks.items(), strict=True):
            rc, msg = sh(vm, f"bankctl stage /dev/vd{disk} 2>&1")
            assert rc == 4 and message in msg, (name, msg)
            st = status(vm)
            assert st["pointers"]["next"] is None, name
            assert not st["trust"]["unsigned_allowed"]
        assert sorted(i["version"] for i in st["images"]) == ["1.0.0", "1.1.0"], st["images"]  # nothing added


def test_squashfs_changed_on_the_banks_partition_fails_verification_and_falls_back(device) -> None:
    d = Device(device, "trust-flip", "good")
    with d.vm(append="bankboot.timeout=0") as vm:
        assert up(vm) == "1.0.0"
        rc, msg = sh(vm, "bankctl stage /dev/vdb")
        assert rc == 0, msg
        nxt = status(vm)["pointers"]["next"]
        damage_squashfs(vm, nxt, 1)  # bypass stage: change next's squashfs where it lies
        reboot(vm)
        vm.console.expect(r"verification failed: .*rootfs\.squashfs has sha256", T)
        assert up(vm) == "1.0.0"  # same boot, current
        st = status(vm)
        bad = next(i for i in st["images"] if i["id"] == nxt)
        assert bad["state"] == "bad" and "verification failed" in bad["reason"]
        rc, log = sh(vm, "bankctl log --json")
        assert json.loads(log)[0]["fallback_from"]["image"] == nxt


def test_verity_maps_the_signed_size_and_stops_blocks_changed_after_boot_checks(device) -> None:
    """The committed image is read through dm-verity, which covers exactly the manifest's signed size: bytes
    appended to the squashfs on the banks partition change nothing; blocks changed on disk behind every check
    (after stage's hash, past the superblock) read as I/O errors, which the next boot's preflight meets before
    the hand-over, so `previous` boots instead of a dead init; a squashfs shorter than signed is refused before
    anything is mapped, and `previous` boots. One device, one boot per step."""
    d = Device(device, "trust-verity", "good")
    with d.vm(append="bankboot.timeout=0") as vm:
        update_to(vm, "1.1.0")  # committed by the image itself; 1.0.0 is previous
        rc, out = sh(vm, "cat /proc/mounts | grep ' /run/bankboot/lower '")
        assert rc == 0 and out.split()[0].startswith("/dev/dm-"), out
        rc, out = sh(vm, "cat /sys/block/$(basename $(awk '$2==\"/run/bankboot/lower\"{print $1}' /proc/mounts))"
                         "/dm/name")
        assert out.strip().startswith("bankboot-")
        cur = status(vm)["pointers"]["current"]
        sq = f"/run/bankboot/banks/overlay/{cur}/rootfs.squashfs"
        rc, out = sh(vm, f"dd if=/dev/urandom bs=4096 count=16 2>/dev/null >> {sq} && sync")
        assert rc == 0, out
        reboot(vm)
        assert up(vm) == "1.1.0"  # appended bytes: outside the signed size, never read
        damage_squashfs(vm, cur, 64)  # 256 KiB in the middle: inside busybox, the image's init
        reboot(vm)
        vm.console.expect(r"image .*cannot boot it: .*Input/output error", T)
        assert up(vm) == "1.0.0"
        rc, log = sh(vm, "bankctl log --json")
        record = json.loads(log)[0]
        assert record["fallback_from"]["image"] == cur and "Input/output error" in record["fallback_from"]["reason"]
        assert status(vm)["pointers"]["current"] == cur  # damage is not a verdict: current stays, and is tried first
        rc, out = sh(vm, f"truncate -s $(( $(stat -c %s {sq}) - 16 * 4096 - 4096 )) {sq} && sync")
        assert rc == 0, out
        reboot(vm)
        vm.console.expect(r"rootfs\.squashfs is \d+ bytes, shorter than the \d+ the signed manifest says", T)
        assert up(vm) == "1.0.0"
