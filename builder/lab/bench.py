"""`make bench`: initramfs size and boot time of bankboot's frozen init next to a busybox-sh /init built
by the same builder from the same parts (same kernel, busybox and modules), booting the same disk in the
same run. Prints numbers against the targets; asserts nothing (people judge them).

Times are read from the guest's own kernel log, on QEMU's instruction clock by default (qemu.machine.ICOUNT:
1 ns per executed guest instruction, idle time at real speed): they repeat to the millisecond from run to
run and do not depend on the host's load or on TCG's translation cost, which no real board pays. They do
not model caches, memory stalls or a real storage device's latency: read them as the work the boot does,
not as a board's wall time. The wall-clock figures (QEMU start to the console line) are printed beside
them as secondary."""

from __future__ import annotations

import re
import shutil
import statistics
import time
from pathlib import Path

from builder.board import Board
from builder.errors import BuildError
from builder.initramfs import build_initramfs
from builder.lab.rig import PROMPT
from builder.paths import build_dir
from overlay_layout.contract import BIN, TIMELINE

BOOT_TIMEOUT = 300
# Marks in the kernel log (dmesg), stamped by the guest's clock; the image's is the sample rootfs's first line.
MARKS = {
    "frozen": [("Run /init", r"Run /init as init process"), ("banner", r"bankboot: bankboot \S+ init on Linux"),
               ("modules loaded", r"bankboot: loaded \d+ kernel modules"),
               ("image init", r"sample-rootfs: init running")],
    "busybox-sh": [("Run /init", r"Run /init as init process"), ("banner", r"baseline busybox-sh init on Linux"),
                   ("modules loaded", r"baseline: loaded \d+ kernel modules"),
                   ("image init", r"sample-rootfs: init running")],
}
# The phases reported, as (label, from mark, to mark); "kernel start" is the kernel log's zero.
PHASES = [("kernel start -> Run /init", None, "Run /init"), ("Run /init -> banner", "Run /init", "banner"),
          ("banner -> modules loaded", "banner", "modules loaded"),
          ("modules loaded -> image init", "modules loaded", "image init"),
          ("Run /init -> image init", "Run /init", "image init"), ("kernel start -> image init", None, "image init")]
TARGETS = {"Run /init -> image init": 1.2, "kernel start -> image init": 1.15}
BOOTS = ("first boot", "later boots")
BUDGET_MB = 5.0
STAGE_MB = 96  # the image bankctl stage copies (a realistic root filesystem, so start-up does not dominate)
TRIAL_MB = (16, 64, 128)  # image sizes for a trial's first boot (the full hash) against a later boot
# The kernel rate-limits lines written to /dev/kmsg (10 per 5 s) unless told not to: the marks must all be
# there. It changes nothing else.
KMSG = "printk.devkmsg=on"


class BenchError(BuildError):
    """A guest that did not report what the bench measures (a failed command, a missing log line)."""


def read_marks(dmesg: str, kind: str) -> dict[str, float]:
    """{mark: seconds since the kernel started} from `dmesg` output; a missing mark is an error naming it."""
    found = {}
    for label, pattern in MARKS[kind]:
        m = re.search(r"^\[\s*(\d+\.\d+)\] " + pattern, dmesg, re.MULTILINE)
        if m is None:
            raise BenchError(f"bench: the guest's kernel log has no {label!r} line ({pattern!r})")
        found[label] = float(m.group(1))
    return found


def phases_of(marks: dict[str, float]) -> dict[str, float]:
    return {label: marks[end] - (marks[start] if start else 0.0) for label, start, end in PHASES}


FLUSHES = "disk flushes (to image up)"  # a count, not seconds: the instruction clock's disks ignore them


def boot_and_read(vm, kind: str, timeline: Path | None = None) -> tuple[dict[str, float], float]:
    """The phases of the boot `vm` is in (guest clock), and QEMU start -> image up on the wall clock. The
    flushes the guest sent up to then are among the phases (FLUSHES): what a board's storage would wait for."""
    vm.console.expect(r"sample-rootfs: up", BOOT_TIMEOUT)
    wall = time.monotonic() - vm.started_at
    flushes = vm.flushes()
    vm.console.expect(PROMPT, BOOT_TIMEOUT)
    rc, text = vm.console.run("dmesg", timeout=120)
    if rc != 0:
        raise BenchError(f"bench: dmesg failed in the guest:\n{text}")
    if timeline is not None:
        rc, text2 = vm.console.run(f"cat {TIMELINE}", timeout=60)
        if rc == 0:
            timeline.write_text(text2.strip() + "\n")
    return {**phases_of(read_marks(text, kind)), FLUSHES: float(flushes)}, wall


def time_boots(board: Board, fresh: Path, kind: str, out: Path, runs: int, clock: str,
               timeline: Path | None) -> dict[str, dict[str, list[float]]]:
    """`runs` times: a copy of the fresh disk, its first boot and a later one. {boot: {phase: [seconds]}}."""
    from builder.lab.boot import disk_vm

    samples: dict[str, dict[str, list[float]]] = {b: {} for b in BOOTS}
    disk = out / f"disk-{kind}-run.img"
    for i in range(runs):
        shutil.copyfile(fresh, disk)
        for which in BOOTS:
            keep = timeline if i == 0 and which == "later boots" else None
            with disk_vm(board, disk, out / kind, clock=clock) as vm:
                phases, wall = boot_and_read(vm, kind, keep)
            for label, t in [*phases.items(), ("wall: QEMU start -> image up", wall)]:
                samples[which].setdefault(label, []).append(t)
    return samples


# The initramfs by component, for the size budget and the unpack cost: (name, test on the archive path).
COMPONENTS = [
    ("crypto (libsodium)", lambda p: "libsodium" in p),
    ("Python runtime (libpython, extensions)", lambda p: p.startswith("bankboot/") and not p.endswith(".zip")),
    ("Python stdlib + our code (init's archive)", lambda p: p in ("init", "bankboot/base_library.zip")),
    ("busybox", lambda p: p == "bin/busybox"),
    ("kernel modules", lambda p: p.startswith("lib/modules/")),
    ("kexec-tools and its libraries", lambda p: p == "sbin/kexec" or "libxen" in p),
    ("libc, ld.so and other system libraries", lambda p: p.startswith(("lib/", "usr/"))),
    ("the rest (config, keys, device nodes)", lambda p: True),
]


def component_of(path: str) -> str:
    return next(name for name, test in COMPONENTS if test(path))


def size_budget(board: Board, policy) -> list[tuple[str, int, int]]:
    """(component, unpacked bytes, zstd bytes of that component's files alone)."""
    from builder.compress import compress
    from builder.cpio import write_cpio
    from builder.fstree import FsTree
    from builder.initramfs import assemble

    tree, _ = assemble(board, "frozen", policy)
    rows = []
    for name, _test in COMPONENTS:
        part = FsTree()
        for path, entry in tree.entries.items():
            if entry.kind == "file" and component_of(path) == name:
                part.entries[path] = entry
        import io

        raw = io.BytesIO()
        write_cpio(part, raw)
        rows.append((name, sum(len(e.read()) for e in part.entries.values()), len(compress(raw.getvalue(), "zstd"))))
    return rows


def unpack_costs(board: Board, policy, out: Path, clock: str) -> list[tuple[str, float]]:
    """What each component costs the kernel before /init runs: kernel start -> "Run /init" with the whole
    initramfs, less the same without that component's files (one boot each, no disk: only the kernel's
    unpacking is timed). Also the same archive uncompressed, which leaves the copying alone."""
    import io

    from builder.compress import compress
    from builder.cpio import write_cpio
    from builder.initramfs import assemble
    from builder.lab.boot import board_vm

    tree, _ = assemble(board, "frozen", policy)

    def run_init_at(entries: dict, method: str) -> float:
        from builder.fstree import FsTree

        t = FsTree()
        t.entries = entries
        if "init" not in entries:  # the kernel prints "Run /init" only when there is one: any file will do
            t.add_file("init", data=b"#!/nothing\n", mode=0o755)
        raw = io.BytesIO()
        write_cpio(t, raw)
        img = out / "unpack.img"
        img.write_bytes(compress(raw.getvalue(), method))
        with board_vm(board, img, log_dir=out / "unpack", clock=clock) as vm:
            m = vm.console.expect(rb"\[\s*(\d+\.\d+)\] Run /init as init process", BOOT_TIMEOUT)
        return float(m.group(1))

    (out / "unpack").mkdir(exist_ok=True)
    full = run_init_at(dict(tree.entries), board.compression)
    rows = [("whole initramfs: kernel start -> Run /init", full),
            ("  of it, decompression (the same archive uncompressed)", full - run_init_at(dict(tree.entries), "none"))]
    for name, _test in COMPONENTS:
        without = {p: e for p, e in tree.entries.items() if not (e.kind == "file" and component_of(p) == name)}
        rows.append((f"  {name}", full - run_init_at(without, board.compression)))
    return rows


def _guest_seconds(vm, cmd: str, timeout: float = 900) -> float:
    """`cmd` in the guest's shell, timed by the guest's clock (busybox time)."""
    rc, text = vm.console.run(f"busybox time -p sh -c '{cmd}' 2>&1", timeout=timeout)
    if rc != 0:
        raise BenchError(f"bench: `{cmd}` failed in the guest:\n{text}")
    found = re.search(r"real ([\d.]+)", text)
    if found is None:
        raise BenchError(f"bench: no time from `{cmd}` in the guest:\n{text}")
    return float(found.group(1))


def time_stage_and_trials(board: Board, initrd: Path, out: Path, key: Path, clock: str) -> list[tuple[str, float]]:
    """In the guest: `bankctl stage` of a STAGE_MB image against sha256sum of the same file (bankctl's own
    start-up is in the time, as a user sees it); then for each TRIAL_MB size, the trial's first boot (the
    whole image hashed against its signed manifest) against a later boot of the same image."""
    import os

    from builder.disk import build_disk
    from builder.image import build_image
    from builder.lab.boot import disk_vm
    from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs

    banks = [out / f"big-{mb}.bank" for mb in (STAGE_MB, *TRIAL_MB)]
    for bank, mb in zip(banks, (STAGE_MB, *TRIAL_MB), strict=True):
        if not bank.is_file():
            rootfs = build_sample_rootfs(board.arch, out / "rootfs-big", version="1.1.0")
            (rootfs / "payload").write_bytes(os.urandom(mb << 20))  # incompressible: the squashfs keeps its size
            build_image(rootfs, "1.1.0", bank, sign_key=key, persist=SAMPLE_PERSIST)
    disk = out / "disk-stage.img"
    res = []
    for i, (bank, mb) in enumerate(zip(banks, (STAGE_MB, *TRIAL_MB), strict=True)):
        # The update travels on the userdata partition: SD-card boards have no second disk.
        build_disk(board, out / "sample.bank", disk, 1024 << 20, initrd, userdata_size=(mb + 64) << 20,
                   userdata_files=[bank], extra_cmdline=KMSG)
        with disk_vm(board, disk, out / "stage", clock=clock, reboot=True) as vm:
            vm.console.expect(PROMPT, BOOT_TIMEOUT)
            if i == 0:
                size = bank.stat().st_size / 1e6
                res.append(("sha256sum of the bank file (MB/s)", size / _guest_seconds(
                    vm, f"sha256sum /userdata/{bank.name} >/dev/null")))
                res.append(("bankctl stage of it (MB/s)", size / _guest_seconds(
                    vm, f"{BIN}/bankctl stage /userdata/{bank.name} >/dev/null")))
                continue
            vm.console.run(f"{BIN}/bankctl stage /userdata/{bank.name} >/dev/null", timeout=900)
            times = []
            for _ in ("trial", "later"):
                vm.console.sendline("reboot -f")
                vm.console.expect(r"Run /init as init process", BOOT_TIMEOUT)
                phases, _wall = boot_and_read(vm, "frozen")
                times.append(phases["Run /init -> image init"])
            res.append((f"{mb} MB image: trial's first boot, Run /init -> image init (s)", times[0]))
            res.append((f"{mb} MB image: a later boot (s)", times[1]))
            res.append((f"{mb} MB image: first boot / later boot (target 1.5x)", times[0] / times[1]))
    return res


def run_bench(board: Board, runs: int = 3, clock: str = "icount", parts: tuple[str, ...] = ()) -> int:
    """Default settings (the ESC window in place), each run on a disk fresh from `bankboot disk`: its first
    boot, then a later one; medians of `runs`. parts: run only these of "boot", "size", "unpack", "stage",
    "kexec", "firmware" (all by default)."""
    from builder.disk import build_disk
    from builder.image import build_image
    from builder.initramfs import TrustPolicy
    from builder.keys import keygen
    from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
    from builder.lab.timeline import phases, read_timeline, render_svg
    from qemu.machine import ICOUNT

    wanted = set(parts or ("boot", "size", "unpack", "stage", "kexec", "firmware"))
    out = build_dir() / "bench" / board.name
    out.mkdir(parents=True, exist_ok=True)
    flags = " ".join(ICOUNT) if clock == "icount" else "the host clock (KVM or TCG, wall time)"
    print(f"bench: {board.name} ({board.description}): {board.qemu_system} {' '.join(board.qemu_args)} with {flags}")
    print(f"guest times from the kernel log; median of {runs} boot(s) of a disk fresh from `bankboot disk`, "
          f"default settings (ESC window in place)")
    key = out / "bench"
    if not key.with_suffix(".key").exists():
        keygen(key, "bankboot bench")
    policy = TrustPolicy(keys=(key.with_suffix(".pub"),))
    rootfs = build_sample_rootfs(board.arch, out / "rootfs")
    build_image(rootfs, "1.0.0", out / "sample.bank", sign_key=key.with_suffix(".key"), persist=SAMPLE_PERSIST)
    frozen = build_initramfs(board, out / "initramfs-frozen.img", policy=policy)
    if "boot" in wanted:
        medians, raw = {}, {}
        for kind in ("frozen", "busybox-sh"):
            result = frozen if kind == "frozen" else build_initramfs(board, out / f"initramfs-{kind}.img", init=kind,
                                                                     policy=policy)
            fresh = out / f"disk-{kind}.img"
            build_disk(board, out / "sample.bank", fresh, 256 << 20, result.path, extra_cmdline=KMSG)
            got = time_boots(board, fresh, kind, out, runs, clock, out / "timeline.json" if kind == "frozen" else None)
            medians[kind] = {w: {k: statistics.median(v) for k, v in by.items()} for w, by in got.items()}
            raw[kind] = got
            print(f"  {kind}: initramfs {result.compressed / 1e6:.2f} MB {result.compression}, "
                  f"{result.unpacked / 1e6:.2f} MB unpacked")
        print(f"\n{'phase (seconds)':<34}" + "".join(f"{k[:9] + ' ' + w.split()[0]:>16}" for k in medians
                                                      for w in BOOTS) + "   ratio first / later")
        for label in [p[0] for p in PHASES] + ["wall: QEMU start -> image up", FLUSHES]:
            cells = "".join(f"{medians[k][w][label]:>16.3f}" if label != FLUSHES else f"{medians[k][w][label]:>16.0f}"
                            for k in medians for w in BOOTS)
            ratio = "  ".join(f"{medians['frozen'][w][label] / medians['busybox-sh'][w][label]:.2f}x"
                              if medians["busybox-sh"][w][label] else "-" for w in BOOTS)
            goal = f" (target {TARGETS[label]}x)" if label in TARGETS else ""
            print(f"{label:<34}{cells}   {ratio}{goal}")
        # Idle time (waiting for the disk) passes at real speed on the instruction clock: a loaded host can
        # stretch a boot. The spread says whether one did; every sample is in bench.json.
        for label in TARGETS:
            spread = "; ".join(f"{k} {w.split()[0]} {min(raw[k][w][label]):.3f}-{max(raw[k][w][label]):.3f}"
                               for k in raw for w in BOOTS)
            print(f"spread of {label}: {spread}")
        import json

        (out / "bench.json").write_text(json.dumps({"clock": clock, "samples": raw}, indent=1) + "\n")
        order = ["Run /init", "banner", "modules loaded", "image init"]
        groups = []
        for kind in medians:
            for which in BOOTS:
                cum, marks = 0.0, {}
                for label, _start, end in PHASES[:4]:
                    cum += medians[kind][which][label]
                    marks[end] = cum
                groups.append((f"{kind} ({which}, median, instruction clock)", phases(marks, order)))
        if (out / "timeline.json").is_file():
            groups.append(("bankboot init steps (one later boot)", read_timeline(out / "timeline.json")))
        svg = out / "boot.svg"
        svg.write_text(render_svg(groups, f"{board.name}: where the boot's time goes ({clock} clock)"))
        print(f"picture of the boot: {svg}")
    if "size" in wanted:
        print(f"\nsize budget ({board.compression}: {frozen.compressed / 1e6:.2f} MB, target {BUDGET_MB:g} MB "
              f"{'met' if frozen.compressed <= BUDGET_MB * 1e6 else 'NOT MET'}; {frozen.unpacked / 1e6:.2f} MB "
              f"unpacked; bankctl's kit is these files, not a copy):")
        for name, unpacked, packed in size_budget(board, policy):
            print(f"  {name:<44} {unpacked / 1e6:7.2f} MB unpacked {packed / 1e6:6.2f} MB zstd alone")
    if "unpack" in wanted:
        print("\nunpack cost (kernel start -> Run /init, and what each component adds to it):")
        for label, secs in unpack_costs(board, policy, out, clock):
            print(f"  {label:<58} {secs:7.3f} s")
    if "stage" in wanted:
        print()
        for label, value in time_stage_and_trials(board, frozen.path, out, key.with_suffix(".key"), clock):
            print(f"{label:<66} {value:8.2f}")
    if "firmware" in wanted:
        from builder.lab.benchfirmware import bench_firmware

        if clock != "icount":
            print("firmware: measured on the instruction clock only (QEMU's instruction count)")
        else:
            bench_firmware(board, out / "sample.bank", policy, out)
    if "trust" in wanted:  # only when asked for: several initramfs builds and a dozen boots
        from builder.lab.trustbench import run_trust_bench

        run_trust_bench(board, out / "trust", runs, clock)
    if "kexec" in wanted:
        kexec = time_kexec(board, frozen.path, out, key.with_suffix(".key"), runs, clock)
        if kexec is None:
            print(f"kexec: {board.name} does not kexec images' own kernels (docs/boards.md)")
        else:
            print(f"image on its own kernel (loader, kexec, second kernel): second kernel start -> image init "
                  f"{kexec[0]:.3f} s, loader's Run /init -> kexec {kexec[1]:.3f} s (guest clocks)")
    return 0


def time_kexec(board: Board, initrd: Path, out: Path, key: Path, runs: int,
               clock: str) -> tuple[float, float] | None:
    """For a disk whose current image carries Debian's other kernel flavour (parts.SECOND_KERNELS): the
    loader boots and kexecs it, the second stage boots the image. Medians of (second kernel start -> image
    init, loader's Run /init -> its kexec line)."""
    from builder.disk import build_disk
    from builder.image import build_image
    from builder.initramfs import read_settings
    from builder.lab.boot import disk_vm
    from builder.lab.samplerootfs import SAMPLE_PERSIST, add_kernel_modules, build_sample_rootfs
    from builder.parts import SECOND_KERNELS, locate_kernel_package

    if board.arch.debian not in SECOND_KERNELS or read_settings(initrd)[0].kexec == "none":
        return None
    second = locate_kernel_package(board.arch, SECOND_KERNELS[board.arch.debian])
    rootfs = build_sample_rootfs(board.arch, out / "rootfs-kexec", version="1.0.0")
    add_kernel_modules(rootfs, second, board.modules)
    build_image(rootfs, "1.0.0", out / "kexec.bank", sign_key=key, persist=SAMPLE_PERSIST, kernel=second.image,
                kernel_board=board)
    fresh = out / "disk-kexec.img"
    build_disk(board, out / "kexec.bank", fresh, 256 << 20, initrd, extra_cmdline=KMSG)
    second_boot, loader = [], []
    for _ in range(runs):
        with disk_vm(board, fresh, out / "kexec", clock=clock) as vm:
            m1 = vm.console.expect(rb"\[\s*(\d+\.\d+)\] Run /init as init process", BOOT_TIMEOUT)
            m2 = vm.console.expect(rb"\[\s*(\d+\.\d+)\] bankboot: kexec: starting kernel", BOOT_TIMEOUT)
            loader.append(float(m2.group(1)) - float(m1.group(1)))
            vm.console.expect(r"sample-rootfs: up", BOOT_TIMEOUT)
            vm.console.expect(PROMPT, BOOT_TIMEOUT)
            _rc, text = vm.console.run("dmesg", timeout=120)
            second_boot.append(read_marks(text, "frozen")["image init"])
    return statistics.median(second_boot), statistics.median(loader)
