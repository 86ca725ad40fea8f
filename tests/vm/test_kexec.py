"""Images with their own kernel, booted by kexec from the loader on the boot partition: qemu-x86_64 (Debian's
kernel has kexec_file_load) and qemu-aarch64 (kexec_load through Debian's kexec-tools). A kernel refused by
kexec, a kernel that panics and an initramfs without modules for its kernel fall back within their tries;
an image on Debian's cloud kernel comes up on that kernel (its `uname -r`, its own bankboot initramfs),
keeps booting it after it commits, and becomes the loader with `bankctl install-loader`."""

from __future__ import annotations

import random
import re
import shutil
import time
from pathlib import Path

import pytest

import builder.kernelfile
from builder.board import load_board
from builder.disk import build_disk
from builder.image import build_image
from builder.initramfs import build_initramfs
from builder.kernelfile import read_kernel
from builder.lab.boot import disk_vm
from builder.lab.rig import PROMPT, guest_json
from builder.lab.samplerootfs import SAMPLE_PERSIST, add_kernel_modules, build_sample_rootfs
from builder.parts import SECOND_KERNELS, locate_kernel, locate_kernel_package
from qemu.vm import VM
from tests.fixtures import board_parts

pytestmark = pytest.mark.vm
T = 240


def _up(vm: VM) -> tuple[str, str]:
    """(the image's version, the kernel it runs on), both asked of the guest."""
    vm.console.expect(r"sample-rootfs: ready", T)
    vm.console.expect(PROMPT, T)
    rc, out = vm.console.run("cat /etc/sample-version; uname -r", timeout=T)
    assert rc == 0, out
    version = re.search(r"\b(\d+\.\d+\.\d+)\b", out).group(1)
    release = re.search(r"^(\d+\.\d+\.\d+-\S+)\s*$", out, re.M).group(1)
    return version, release


def _status(vm: VM) -> dict:
    rc, out = vm.console.run("bankctl status --json", timeout=T)
    assert rc == 0, out
    return guest_json(out)  # without a kernel line ("hrtimer: interrupt took ...") printed in the middle


def _image(st: dict, version: str) -> dict:
    return next(i for i in st["images"] if i["version"] == version)


def _kexecd_kernel_failures_fall_back(vm: VM, second: str, loader: str) -> None:
    # A kernel that panics (its init exits; panic=-1 reboots): its boot spent the try; then the previous image.
    rc, msg = vm.console.run("bankctl stage /userdata/app-1.2.0.bank --tries 1", timeout=T)
    assert rc == 0, msg
    vm.console.sendline("reboot")
    vm.console.expect(r"kexec: starting kernel " + re.escape(second), T)
    vm.console.expect(r"Kernel panic", T)
    assert _up(vm) == ("1.0.0", loader)
    assert "no tries left" in _image(_status(vm), "1.2.0")["reason"]

    # Its initramfs cannot serve its kernel: the second stage reboots to the loader, which falls back.
    rc, msg = vm.console.run("bankctl stage /userdata/app-1.4.0.bank --tries 1", timeout=T)
    assert rc == 0, msg
    vm.console.sendline("reboot")
    vm.console.expect(r"kexec: starting kernel " + re.escape(second), T)
    vm.console.expect(r"has no modules for the running kernel " + re.escape(second), T)
    assert _up(vm) == ("1.0.0", loader)
    assert _image(_status(vm), "1.4.0")["state"] == "bad"


def _install_loader(vm: VM, second: str) -> None:
    """Its kernel becomes the loader: the files on the boot partition are replaced (old kept as .previous)."""
    rc, msg = vm.console.run("bankctl install-loader current", timeout=T)
    assert rc == 0 and "the loader is now kernel " + second in msg, msg
    rc, msg = vm.console.run("bankctl install-loader previous", timeout=T)
    assert rc != 0 and "carries no kernel" in msg, msg


# (loader board, the board whose kernel is the wrong architecture, what the loader says when kexec refuses it)
CASES = {"qemu-x86_64": ("qemu-aarch64", r"kexec_file_load of \S+: Exec format error"),
         "qemu-aarch64": ("qemu-x86_64", r"kexec -l \S+ \(kexec-tools\) failed")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_image_kernel_kexec_commits_and_failures_fall_back(name: str, test_dir: Path, signing_key, trust_policy,
                                                          monkeypatch) -> None:
    board, loader_kernel, _ = board_parts(name)
    other_board, refused = CASES[name]
    second = locate_kernel_package(board.arch, SECOND_KERNELS[board.arch.debian])
    assert second.version != loader_kernel.version
    out = test_dir / f"kexec-{name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    # The cloud flavour has no i6300esb: the image's board settings are the loader's minus that module.
    cloud_board = out / f"{name}-cloud.toml"
    cloud_board.write_text(board.path.read_text().replace(', "i6300esb"]', "]"))
    modules = tuple(m for m in board.modules if m != "i6300esb")
    key = signing_key.private

    base = build_sample_rootfs(board.arch, out / "rootfs-1.0.0", version="1.0.0")
    build_image(base, "1.0.0", out / "app-1.0.0.bank", sign_key=key, persist=SAMPLE_PERSIST)
    initrd = build_initramfs(board, out / "loader.img", policy=trust_policy).path
    # What happens after a kexec'd kernel fails (it panics; its initramfs cannot serve it) is the init's
    # policy, the same whichever way the kernel was loaded: proven on one board, to keep `make test` short.
    failures = name == "qemu-aarch64"
    banks = {}
    # 1.2.0's kernel panics: its init (busybox's false, an argument after `--`) exits at once.
    versions = (("1.1.0", ""), ("1.2.0", "rdinit=/bin/busybox -- false"), ("1.3.0", ""), ("1.4.0", ""))
    for version, append in versions if failures else (versions[0], versions[2]):
        rootfs = build_sample_rootfs(board.arch, out / f"rootfs-{version}", version=version)
        add_kernel_modules(rootfs, second, modules)
        banks[version] = out / f"app-{version}.bank"
        if version == "1.3.0":  # a kernel for another architecture: only kexec itself can refuse it
            wrong = builder.kernelfile.KernelFile(board.arch.debian, second.version, "#1 wrong architecture",
                                                  read_kernel(locate_kernel(load_board(other_board)).image).data)
            monkeypatch.setattr(builder.kernelfile, "read_kernel", lambda p, k=wrong: k)
        # 1.4.0 ships the loader's initramfs, whose modules are for the loader's kernel, not its own.
        build_image(rootfs, version, banks[version], sign_key=key, persist=SAMPLE_PERSIST, kernel=second.image,
                    kernel_board=None if version == "1.4.0" else str(cloud_board),
                    kernel_initramfs=initrd if version == "1.4.0" else None, kernel_append=append)
        monkeypatch.undo()
    disk = out / "disk.img"
    build_disk(board, out / "app-1.0.0.bank", disk, 640 << 20, initrd, userdata_size=256 << 20,
               userdata_files=list(banks.values()), boot_size=160 << 20)

    with disk_vm(board, disk, out, reboot=True) as vm:
        assert _up(vm) == ("1.0.0", loader_kernel.version)

        # Refused by kexec_file_load: the trial fails in the loader's boot, which goes on with 1.0.0.
        rc, msg = vm.console.run("bankctl stage /userdata/app-1.3.0.bank", timeout=T)
        assert rc == 0, msg
        vm.console.sendline("reboot")
        vm.console.expect(refused, T)
        assert _up(vm) == ("1.0.0", loader_kernel.version)
        assert _image(_status(vm), "1.3.0")["state"] == "bad"

        if failures:
            _kexecd_kernel_failures_fall_back(vm, second.version, loader_kernel.version)

        # A good image on its own kernel: kexec'd, its own initramfs, commits, and keeps booting that way.
        rc, msg = vm.console.run("bankctl stage /userdata/app-1.1.0.bank", timeout=T)
        assert rc == 0, msg
        # The trial, then (on one board: the same code on every board) a committed boot through kexec again.
        boots = 2 if failures else 1
        for boot in range(boots):
            vm.console.sendline("reboot")
            vm.console.expect(r"kexec: starting kernel " + re.escape(second.version), T)
            start = len(vm.console.text())
            # The image's own initramfs runs the second stage: its banner names the board it was built for.
            vm.console.expect(r"bankboot \S+ init on Linux " + re.escape(second.version) + rf".*board {name}-cloud", T)
            if boot == 0:
                # ESC pressed through the second stage: it has no prompt and opens no menu (the boot is
                # pinned to the image the loader chose; a menu there would offer a choice it must ignore).
                # Until the boot is planned (where a first stage's window closes); the keys wait in the tty.
                for _ in range(100):
                    vm.console.send(b"\x1b")
                    time.sleep(0.1)
                    if "bankboot: booting image" in vm.console.text()[start:]:
                        break
                # Nor do the keys reach the image's shell (the init drops unread input at the hand-over): the
                # command _up types is read whole, not eaten by a pending escape sequence.
                assert _up(vm) == ("1.1.0", second.version)
                second_stage = vm.console.text()[start:]
                assert "Press ESC" not in second_stage and "boot menu" not in second_stage, second_stage[-3000:]
            else:
                assert _up(vm) == ("1.1.0", second.version)
        st = _status(vm)
        assert _image(st, "1.1.0")["pointers"] == ["current"] and _image(st, "1.1.0")["state"] == "good"
        assert _image(st, "1.1.0")["kernel"] == second.version and _image(st, "1.0.0")["kernel"] is None
        assert st["booted"]["kernel"] == {"running": second.version, "loader": loader_kernel.version}
        rc, log = vm.console.run("bankctl log --json", timeout=T)
        records = guest_json(log)
        assert records[0]["kernel"] == second.version and records[0]["trial"] is (boots == 1)
        assert records[1]["kernel"] == loader_kernel.version and records[1]["outcome"].startswith("kexec into")

        if failures:
            # Power cut while the loader is being replaced: whichever loader the boot partition holds boots.
            vm.console.sendline("bankctl install-loader current")
            vm.console.expect(r"loop\d+: detected capacity change", T)  # the image's squashfs is being read
            time.sleep(random.Random(name).uniform(0.2, 3.0))
            vm.power_cut()
        else:
            _install_loader(vm, second.version)
            vm.console.sendline("poweroff -f")
            vm.wait_exit(T)
    if failures:
        with disk_vm(board, disk, out / "after-cut", reboot=True) as vm:
            version, _ = _up(vm)
            assert version == "1.1.0"
            _install_loader(vm, second.version)
    # Power off and on: the firmware (here: VM.from_disk) reads the boot partition again.
    with disk_vm(board, disk, out / "after-install", reboot=True) as vm:
        vm.console.expect(r"bankboot \S+ init on Linux " + re.escape(second.version) + rf".*board {name}-cloud", T)
        assert _up(vm) == ("1.1.0", second.version)
        assert "kexec: starting" not in vm.console.text()
        assert _status(vm)["booted"]["kernel"] == {"running": second.version, "loader": second.version}


def _plain_and_own_kernel(board, second, out: Path, key: Path, append: str = "") -> None:
    """In a fresh `out`: app-1.0.0.bank, booted on the loader's kernel, and app-1.1.0.bank carrying the kernel
    `second` (its modules, and a bankboot initramfs with the board's settings; `append`: its command line)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    base = build_sample_rootfs(board.arch, out / "rootfs-1.0.0", version="1.0.0")
    build_image(base, "1.0.0", out / "app-1.0.0.bank", sign_key=key, persist=SAMPLE_PERSIST)
    rootfs = build_sample_rootfs(board.arch, out / "rootfs-1.1.0", version="1.1.0")
    add_kernel_modules(rootfs, second, board.modules)
    build_image(rootfs, "1.1.0", out / "app-1.1.0.bank", sign_key=key, persist=SAMPLE_PERSIST, kernel=second.image,
                kernel_board=board, kernel_append=append)


def test_a_kernel_that_hangs_is_reset_by_the_watchdog_armed_before_the_kexec(test_dir: Path, signing_key,
                                                                               trust_policy) -> None:
    """bankboot.watchdog= arms the hardware watchdog for a trial before the kexec; with watchdog.stop_on_reboot=0
    (the kernel otherwise stops watchdogs at a kexec) it keeps counting, so a second kernel that hangs (its
    init waits for ever) is reset and the try counted."""
    board, loader_kernel, _ = board_parts("qemu-aarch64")
    second = locate_kernel_package(board.arch, SECOND_KERNELS[board.arch.debian])
    out = test_dir / "kexec-hang"
    # The second kernel's first process reads the console for ever: it never gets to mount anything (busybox's
    # cat: a development initramfs has busybox but no applet links; `--` hands `cat` to it as its argument).
    _plain_and_own_kernel(board, second, out, signing_key.private, append="rdinit=/bin/busybox -- cat")
    initrd = build_initramfs(board, out / "loader.img", policy=trust_policy).path
    disk = out / "disk.img"
    build_disk(board, out / "app-1.0.0.bank", disk, 512 << 20, initrd, userdata_files=[out / "app-1.1.0.bank"],
               extra_cmdline="bankboot.watchdog=10 watchdog.stop_on_reboot=0")
    with disk_vm(board, disk, out, reboot=True) as vm:
        assert _up(vm) == ("1.0.0", loader_kernel.version)
        rc, msg = vm.console.run("bankctl stage /userdata/app-1.1.0.bank --tries 1", timeout=T)
        assert rc == 0, msg
        vm.console.sendline("reboot")
        vm.console.expect(r"watchdog armed for 10 s", T)
        start = vm.console.expect(r"kexec: starting kernel " + re.escape(second.version), T).end()
        # busybox cat: nothing more from this kernel once it runs ("Run /bin/busybox as init process"); on a
        # loaded 2-core host the 10 s may run out while it still unpacks its initramfs: a hang all the same
        reset = vm.console.expect(r"Booting Linux", T).start()  # the hardware reset
        second_boot = bytes(vm.console.buffer[start:reset]).decode(errors="replace")  # nothing asked for a reset
        assert not re.search(r"reboot: Restarting|Kernel panic|bankboot: ", second_boot), second_boot[-2000:]
        assert _up(vm) == ("1.0.0", loader_kernel.version)
        reason = _image(_status(vm), "1.1.0")["reason"]
        assert "no tries left" in reason, reason


def test_a_pi_cannot_kexec_so_a_disk_of_an_image_with_its_own_kernel_is_refused_and_its_trial_falls_back(
        test_dir: Path, signing_key, trust_policy) -> None:
    """raspberrypi3's firmware starts the other cores through a spin table, from which Linux cannot take them
    back, so the kernel refuses any kexec. The board's initramfs carries no kexec (boot.kexec = false),
    `bankboot disk` refuses a disk whose image carries its own kernel (its first boot would find nothing to
    boot), and a loader that tries anyway (built as if the board could) says why before kexec-tools runs;
    either way a staged image with its own kernel fails its trial and the device boots on."""
    from builder.disk import DiskError
    from builder.initramfs import read_settings

    board, loader_kernel, _ = board_parts("raspberrypi3")
    second = locate_kernel_package(board.arch, SECOND_KERNELS[board.arch.debian])
    out = test_dir / "kexec-raspberrypi3"
    _plain_and_own_kernel(board, second, out, signing_key.private)
    initrd = build_initramfs(board, out / "loader.img", policy=trust_policy).path
    assert read_settings(initrd)[0].kexec == "none"
    with pytest.raises(DiskError, match=r"carries its own kernel .* does not kexec .*boot\.kexec"):
        build_disk(board, out / "app-1.1.0.bank", out / "refused.img", 512 << 20, initrd)
    assert not (out / "refused.img").exists()

    able = out / "raspberrypi3-kexec.toml"
    able.write_text(board.path.read_text().replace("kexec = false", "kexec = true"))
    loader = build_initramfs(load_board(str(able)), out / "loader-kexec.img", policy=trust_policy).path
    assert read_settings(loader)[0].kexec == "tools"
    disk = out / "disk.img"
    build_disk(board, out / "app-1.0.0.bank", disk, 512 << 20, loader, userdata_size=192 << 20,
               userdata_files=[out / "app-1.1.0.bank"])
    with disk_vm(board, disk, out, reboot=True) as vm:
        assert _up(vm) == ("1.0.0", loader_kernel.version)
        rc, cpus = vm.console.run("cat /proc/device-tree/cpus/cpu@1/enable-method; echo; "
                                  "cat /sys/devices/system/cpu/possible", timeout=T)
        assert rc == 0 and "spin-table" in cpus and "0-3" in cpus, cpus
        rc, msg = vm.console.run("bankctl stage /userdata/app-1.1.0.bank --tries 2", timeout=T)
        assert rc == 0, msg
        start = len(vm.console.text())
        vm.console.sendline("reboot")
        assert _up(vm) == ("1.0.0", loader_kernel.version)
        assert "kexec: starting" not in vm.console.text()[start:]
        image = _image(_status(vm), "1.1.0")
        assert image["state"] == "bad" and "spin table" in image["reason"], image
