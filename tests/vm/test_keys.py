"""Keys over a device's lifetime on qemu-aarch64: a key rotation committed through real power cuts (QEMU
killed during `bankctl mark-good`), the retired key then refused at stage, at rollback and at boot, the
trust file deleted offline and restored from the committed image; and an encrypted bank staged with the
device's own key (one for another device refused), booted through dm-verity like any other."""

from __future__ import annotations

import base64
import json
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from builder import bankspart
from builder.image import build_image
from builder.keys import keygen
from builder.lab import faultdisk
from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
from builder.signing import add_key_update
from overlay_layout.keychain import TRUST_FILE
from tests.vm.devices import Device, reboot, sh, status, up

pytestmark = pytest.mark.vm
# When to pull the plug, against the time a bankctl start-up takes in this guest (most of mark-good: its
# writes come at the end of it): a little before, at, and after it, one cut per boot until it commits.
CUTS = (-0.2, 0.0, 0.1, 0.25, 0.5)


def key_pair(out: Path, name: str, encryption: bool = False) -> tuple[Path, Path, str]:
    if not (out / f"{name}.key").exists():
        keygen(out / name, f"test key {name}", encryption=encryption)
    from overlay_layout.trust import key_id

    raw = base64.b64decode((out / f"{name}.pub").read_text().split()[1])
    return out / f"{name}.key", out / f"{name}.pub", key_id(raw)


def with_disk(d: Device, extra: Path):
    """The device's VM with its update disk (/dev/vdb) and `extra` as /dev/vdc."""
    vm = d.vm(append="bankboot.timeout=0")
    vm.disks.append(extra)
    return vm


def trust_of(vm) -> dict:
    return status(vm)["trust"]


def test_a_rotation_survives_power_cuts_and_the_retired_key_never_runs_again(device, signing_key) -> None:
    board, out = device.board, device.out
    new_key, _, b_id = key_pair(out, "rotation-new")
    from overlay_layout.trust import key_id, read_public_key

    a_id = key_id(read_public_key(str(signing_key.public)))
    chain = out / "rotation-chain.json"
    chain.unlink(missing_ok=True)
    add_key_update(chain, (out / "rotation-new.pub",), 1, (signing_key.private, new_key),
                   root_keys=(signing_key.public,))
    rootfs = build_sample_rootfs(board.arch, out / "rootfs-rotation", version="2.0.0", mark_good=False)
    bank = out / "rotation.bank"
    m = build_image(rootfs, "2.0.0", bank, sign_key=(signing_key.private, new_key), key_updates=chain,
                    persist=SAMPLE_PERSIST)
    d = Device(device, "keys-rotation", None)
    d.update = bank
    extra = device.banks["good"][0]  # /dev/vdc: an update signed by key A alone

    def after_cut(vm) -> bool:
        """Never half: 2.0.0 committed and rotated, or still the trial under the old keys. Whether committed."""
        st = status(vm)
        image = next(i for i in st["images"] if i["id"] == m["id"])
        assert (image["state"], st["trust"]["serial"]) in (("trial", 0), ("good", 1)), st
        print(f"after the cut: 2.0.0 is {image['state']}, key update {st['trust']['serial']} in force")
        return bool(image["state"] == "good")

    # Every boot has both update disks; the stage's boot goes on into the trial and the first cut, and the
    # boot that finds the commit done (or follows the last cut) runs the checks after it: no boot is spent
    # on anything else.
    with ExitStack() as boot:
        vm = boot.enter_context(with_disk(d, extra))
        assert up(vm) == "1.0.0"
        rc, msg = sh(vm, "bankctl stage --tries 9 /dev/vdb 2>&1")
        assert rc == 0 and f"key update 1: adds {b_id}, retires {a_id}" in msg and "once this image is committed" \
            in msg, msg
        assert trust_of(vm)["serial"] == 0  # staged is not committed
        reboot(vm)
        assert up(vm) == "2.0.0"
        committed = after_cut(vm)
        for offset in CUTS:  # the commit, with the power going at a different instant each time
            if committed:
                break
            start = time.monotonic()
            sh(vm, "bankctl log >/dev/null")
            delay = max(0.1, time.monotonic() - start + offset)
            vm.console.sendline("bankctl mark-good >/dev/null 2>&1 &")
            time.sleep(delay)
            vm.power_cut()
            print(f"power cut {delay:.2f} s into bankctl mark-good")
            boot.close()
            vm = boot.enter_context(with_disk(d, extra))
            assert up(vm) == "2.0.0"
            committed = after_cut(vm)
        if not committed:
            rc, msg = sh(vm, "bankctl mark-good 2>&1")
            assert rc == 0, msg
        t = trust_of(vm)
        assert (t["serial"], t["keys"], t["retired"], t["root_keys"]) == (1, [b_id], {a_id: 1}, [a_id]), t
        rc, msg = sh(vm, "bankctl status")
        assert f"never boots: signed only by retired key {a_id}" in msg, msg  # 1.0.0, previous
        rc, msg = sh(vm, "bankctl rollback 2>&1")
        assert rc == 3 and f"signed only by retired key {a_id}" in msg, msg
        # an update signed by the retired key alone (1.1.0, as the base device's updates are)
        rc, msg = sh(vm, "bankctl stage /dev/vdc 2>&1")
        assert rc == 4 and f"signed only by retired key {a_id} (key update 1)" in msg, msg
        assert status(vm)["pointers"]["next"] is None
        sh(vm, "sync")
    # Someone with the card deletes the trust file and points current back at 1.0.0 (signed by key A only).
    with bankspart.banks_partition(d.disk) as part:
        old = bankspart.pointer(part, "previous")
        bankspart.debugfs(part, f"rm {TRUST_FILE}")
        faultdisk.set_symlink(part, "current", old)
    with d.vm(append="bankboot.timeout=0") as vm:
        assert up(vm) == "2.0.0"  # the rightful image, under the keys it carries
        t = trust_of(vm)
        assert (t["serial"], t["keys"]) == (1, [b_id]), t
        rc, log = sh(vm, "bankctl log --json")
        assert f"current points at {old}, which is signed only by retired key {a_id}" in json.loads(log)[0]["notes"]
        rc, out_ = sh(vm, f"cat /run/bankboot/banks/{TRUST_FILE}")
        assert rc == 0 and json.loads(out_)["updates"][0]["serial"] == 1  # written back at boot
    assert "sample-rootfs: up, version 1.0.0" not in vm.console.text()


def test_an_encrypted_bank_stages_with_the_devices_key_and_boots_verified(device, signing_key) -> None:
    board, out = device.board, device.out
    dev_key, dev_pub, dev_id = key_pair(out, "device-1", encryption=True)
    _, other_pub, other_id = key_pair(out, "device-2", encryption=True)
    rootfs = build_sample_rootfs(board.arch, out / "rootfs-encrypted", version="1.1.0")
    mine, theirs = out / "encrypted-mine.bank", out / "encrypted-theirs.bank"
    m = build_image(rootfs, "1.1.0", mine, sign_key=signing_key.private, persist=SAMPLE_PERSIST,
                    encrypt_to=(dev_pub,), confirm_boots=True)
    build_image(rootfs, "1.1.0", theirs, sign_key=signing_key.private, persist=SAMPLE_PERSIST,
                encrypt_to=(other_pub,), image_id="1.1.0-theirs")
    d = Device(device, "keys-encrypted", None)
    d.update = theirs
    with with_disk(d, mine) as vm:
        assert up(vm) == "1.0.0"
        rc, msg = sh(vm, "bankctl stage /dev/vdb 2>&1")
        assert rc == 4 and "this device has no decryption key at /userdata/bankboot/device.key" in msg, msg
        key_line = dev_key.read_text().strip()
        rc, msg = sh(vm, f"mkdir -p /userdata/bankboot && echo '{key_line}' > /userdata/bankboot/device.key && "
                         f"chmod 600 /userdata/bankboot/device.key && sync")
        assert rc == 0, msg
        rc, msg = sh(vm, "bankctl stage /dev/vdb 2>&1")
        assert rc == 4 and f"encrypted for key {other_id}, not for this device's key {dev_id}" in msg, msg
        assert status(vm)["pointers"]["next"] is None
        rc, msg = sh(vm, "bankctl stage /dev/vdc 2>&1")
        assert rc == 0 and f"staged {m['id']}" in msg, msg
        rc, msg = sh(vm, f"head -c 4 /run/bankboot/banks/overlay/{m['id']}/rootfs.squashfs")
        assert msg.strip().endswith("hsqs"), msg  # stored plain: the boot reads it through dm-verity
        reboot(vm)
        assert up(vm) == "1.1.0"  # the trial's first boot hashed all of it against the signed manifest
        rc, msg = sh(vm, "grep ' /run/bankboot/lower ' /proc/mounts")
        assert msg.split()[0].startswith("/dev/dm-"), msg
        st = status(vm)
        assert st["pointers"]["current"] == m["id"] and st["booted"]["signed_by"].startswith("key ")
