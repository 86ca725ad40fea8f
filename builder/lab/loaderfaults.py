"""The loader classes of the never-brick campaign (`bankboot faults --loader`, part of `make faults`): on a disk
made for the board's firmware (U-Boot or UEFI), `bankctl install-loader` is cut by a power cut at a random
instant, or installs a new loader that cannot boot: its kernel panics before /init, its initramfs is cut short,
or it hangs before the init. Each must end on a good signed image within MAX_BOOTS boots with no one's help: the
firmware's try count (and, for a hang, the watchdog its boot script arms) brings back the committed loader.

One QEMU per injection runs across the guest's resets as a board does (a reset restarts the firmware); boots are
counted by the firmware's banner. The guest is asked what runs (/etc/sample-version, the signer in
/run/bankboot/booted) and which loader it came from (`bankctl loader --json`)."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

from builder.board import Board
from builder.errors import BuildError
from builder.lab.faults import MAX_BOOTS, Outcome
from builder.lab.rig import (
    PROMPT,
    UP,
    boot_entries,
    copy_device,
    device_vm,
    fat_read,
    fat_write,
    fresh_dir,
    sh,
    signed_initramfs,
)
from overlay_layout.contract import BOOTED
from qemu.console import ConsoleTimeout
from qemu.vm import VM

LOADER_CLASSES = ("loader-cut", "loader-panic", "loader-truncated", "loader-hang")
# No watchdog survives UEFI's ExitBootServices on QEMU (systemd-boot arms none): a kernel that hangs there waits
# for a power cycle (docs/firmware.md), so the hang class runs where the boot script arms one.
CLASSES = {"uboot": LOADER_CLASSES, "uefi": LOADER_CLASSES[:3]}


def classes_for(board: Board) -> tuple[str, ...]:
    """A hang before the init needs a watchdog the boot script arms (board.uboot_watchdog): qemu-armv7's kernel has
    no i6300esb driver and the board no watchdog, so a hung trial there waits for a power cycle like on UEFI."""
    classes = CLASSES[board.firmware]
    if board.firmware == "uboot" and not board.uboot_watchdog:
        classes = tuple(c for c in classes if c != "loader-hang")
    return classes


BANNERS = {"uboot": rb"U-Boot 20\d\d\.\d\d", "uefi": rb"(UEFI firmware|BdsDxe: loading)"}
BOOT_TIMEOUT = 120.0


class LoaderRig:
    def __init__(self, board: Board, out: Path, rng: random.Random, disk: Path, install_seconds: float) -> None:
        self.board, self.out, self.rng, self.disk, self.install_seconds = board, out, rng, disk, install_seconds
        self.n = 0


def _up(vm: VM, timeout: float = BOOT_TIMEOUT) -> None:
    vm.console.expect(UP, timeout)
    vm.console.expect(PROMPT, 60)


def _vm(rig: LoaderRig, disk: Path, name: str) -> VM:
    return device_vm(rig.board, disk, fresh_dir(rig.out / "runs" / name), reboot=True)


def prepare(board: Board, out: Path, rng: random.Random, say=print) -> LoaderRig:
    """A device whose image 1.0.0 carries the loader's kernel and initramfs, on a disk for the board's firmware."""
    from builder.disk import build_disk
    from builder.image import build_image
    from builder.lab.samplerootfs import SAMPLE_PERSIST, add_kernel_modules, build_sample_rootfs
    from builder.parts import locate_kernel

    if board.firmware == "direct":
        raise BuildError(f"board {board.name} boots direct: it has no loader slots (boot.firmware)")
    out.mkdir(parents=True, exist_ok=True)
    say(f"faults: building a {board.firmware} device for the loader classes")
    initrd, sign_key = signed_initramfs(board, out, "campaign", "bankboot loader fault campaign")
    rootfs = build_sample_rootfs(board.arch, out / "rootfs", version="1.0.0")
    kernel = locate_kernel(board)
    add_kernel_modules(rootfs, kernel, board.modules)
    build_image(rootfs, "1.0.0", out / "app.bank", sign_key=sign_key, persist=SAMPLE_PERSIST,
                kernel=kernel.image, kernel_initramfs=initrd)
    disk = out / "device.img"
    build_disk(board, out / "app.bank", disk, 512 << 20, initrd, boot_size=None, firmware=board.firmware)
    probe = out / "probe.img"
    copy_device(disk, probe)
    with _vm(LoaderRig(board, out, rng, disk, 0), probe, "prep") as vm:
        _up(vm)
        start = time.monotonic()
        sh(vm, "bankctl install-loader current >/dev/null")
        seconds = time.monotonic() - start
    say(f"faults: install-loader takes {seconds:.1f} s in the guest")
    return LoaderRig(board, out, rng, disk, seconds)


def _install_then_break(rig: LoaderRig, disk: Path, name: str, fault: str) -> str:
    """install-loader completes; then, powered off, the new slot is made to fail as `fault` says. Returns
    the slot now on trial."""
    with _vm(rig, disk, name) as vm:
        _up(vm)
        sh(vm, "bankctl install-loader current --tries 2 >/dev/null")
        out = sh(vm, "bankctl loader --json")
        trial = json.loads(out[out.index("{"):])["trial"]["slot"]
        vm.console.sendline("poweroff -f")
        vm.wait_exit(60)
    tmp = rig.out / "runs" / name
    if rig.board.firmware == "uboot":
        cmdline_file = f"{trial}/cmdline.env"
        text = fat_read(disk, cmdline_file).decode().strip()
    else:
        cmdline_file = next(entry for entry in boot_entries(disk) if "+" in entry)
        text = fat_read(disk, cmdline_file).decode().rstrip("\n")
    if fault in ("loader-panic", "loader-hang"):
        # panic: the kernel finds no init and no root it can mount; hang: a program that never returns runs
        # instead of our /init (busybox's shell waiting on the console), before any watchdog driver loads
        def broken(cmdline: str) -> str:
            if fault == "loader-hang":
                return cmdline + " rdinit=/bin/sh"
            words = [w for w in cmdline.split() if not w.startswith("root=") and w != "rootwait"]
            return " ".join([*words, "rdinit=/nonexistent"])

        if rig.board.firmware == "uboot":
            text = "bb_args=" + broken(text.removeprefix("bb_args="))
        else:
            text = "\n".join(f"options {broken(line[8:])}" if line.startswith("options ") else line
                             for line in text.split("\n"))
        fat_write(disk, cmdline_file, (text + "\n").encode(), tmp)
    else:  # cut short, as a power cut on a card that reorders writes leaves it
        data = fat_read(disk, f"{trial}/initrd.img")
        fat_write(disk, f"{trial}/initrd.img", data[:int(len(data) * rig.rng.uniform(0.05, 0.95))], tmp)
    return trial


def recover(rig: LoaderRig, disk: Path, name: str) -> tuple[VM | None, int, str]:
    """Power on and let the firmware do its work until an image is up: (the VM, boots it took, console)."""
    vm = _vm(rig, disk, name + "-recover").start()
    try:
        _up(vm, BOOT_TIMEOUT * MAX_BOOTS)
    except ConsoleTimeout:
        text = vm.console.text()
        vm.stop()
        return None, len(re.findall(BANNERS[rig.board.firmware], text.encode())), text
    text = vm.console.text()
    return vm, len(re.findall(BANNERS[rig.board.firmware], text.encode())), text


def inject(rig: LoaderRig, fault: str) -> Outcome:
    rig.n += 1
    name = f"L{rig.n:02d}-{fault}"
    disk = rig.out / "work.img"
    copy_device(rig.disk, disk)
    detail = ""
    if fault == "loader-cut":
        delay = rig.rng.uniform(0, rig.install_seconds)
        vm = _vm(rig, disk, name).start()
        try:
            _up(vm)
            vm.console.sendline("bankctl install-loader current --tries 2 >/dev/null 2>&1 &")
            time.sleep(delay)
            vm.power_cut()
        finally:
            vm.stop()
        detail = f"{delay:.2f} s into `bankctl install-loader` (of {rig.install_seconds:.1f} s)"
        expect_slot = None  # either: the old one, or the new one if the cut came after the arm
    else:
        trial = _install_then_break(rig, disk, name, fault)
        detail = f"new loader {trial} on trial, 2 tries"
        expect_slot = "a" if trial == "b" else "b"
    up, boots, text = recover(rig, disk, name)
    if up is None:
        return Outcome("loader: " + fault, detail, False, boots, error="no image came up: " + text[-1500:])
    try:
        problems = []
        version = sh(up, "cat /etc/sample-version").strip().splitlines()[-1]
        booted = json.loads(sh(up, f"cat {BOOTED}").strip().splitlines()[-1])
        out = sh(up, "bankctl loader --json")
        st = json.loads(out[out.index("{"):])  # after any FAT-fs warning the kernel printed while mounting
        if version != "1.0.0":
            problems.append(f"version {version} is up")
        if not booted.get("signed_by"):
            problems.append("the image up was not verified as signed")
        if boots > MAX_BOOTS:
            problems.append(f"{boots} boots, more than {MAX_BOOTS}")
        if expect_slot and st["booted"]["slot"] != expect_slot:
            problems.append(f"loader {st['booted']['slot']} booted, expected the committed {expect_slot}")
        if st["booted"]["slot"] != st["good"]:
            problems.append(f"the loader up ({st['booted']['slot']}) is not the committed one ({st['good']})")
        detail += f"; ended on loader {st['booted']['slot']}"
        return Outcome("loader: " + fault, detail, not problems, boots, version, error="; ".join(problems))
    finally:
        up.stop()


def run_loader_faults(board: Board, out: Path, rng: random.Random, rounds: int = 1, say=print,
                      classes: tuple[str, ...] | None = None) -> list[Outcome]:
    """classes: these loader classes (a slice), each once per round; default every class the board has."""
    rig = prepare(board, out, rng, say)
    outcomes = []
    plan = [c for _ in range(rounds) for c in (classes or classes_for(board))]
    for i, fault in enumerate(plan, 1):
        try:
            o = inject(rig, fault)
        except Exception as e:  # the harness itself: reported as a failure of that injection
            o = Outcome("loader: " + fault, "", False, 0, error=f"{type(e).__name__}: {str(e)[-800:]}")
        outcomes.append(o)
        say(f"faults: [loader {i}/{len(plan)}] {o.fault}: {o.detail}: {'ok' if o.recovered else 'FAILED'}, "
            f"{o.boots} boot(s)" + (f": {o.error}" if o.error else ""))
    return outcomes
