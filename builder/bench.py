"""`make bench`: initramfs size and boot time of bankboot's frozen init next to a busybox-sh /init built
by the same builder from the same parts (same kernel, busybox and modules) and booted in the same run.
Prints numbers; asserts nothing (targets are judged by people reading them)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from builder.board import Board
from builder.initramfs import build_initramfs
from builder.paths import build_dir
from overlay_layout.contract import BIN, TIMELINE

# (label, pattern) pairs the console must show, in order, per init kind.
MARKERS = {
    "frozen": [("banner", r"bankboot \S+ init on Linux"), ("modules loaded", r"loaded \d+ kernel modules")],
    "busybox-sh": [("banner", r"baseline busybox-sh init on Linux"),
                   ("modules loaded", r"baseline: loaded \d+ kernel modules")],
}
BOOT_TIMEOUT = 180
IMAGE_UP = r"sample-rootfs: up"


def time_boot(board: Board, initrd: Path, kind: str, log_dir: Path, disk: Path | None = None,
              timeline: Path | None = None) -> dict[str, float]:
    """One boot's marker times from QEMU start; `timeline`: save the init's own timeline.json there."""
    from builder.boot import board_vm, disk_vm

    times: dict[str, float] = {}
    vm = disk_vm(board, disk, log_dir) if disk else board_vm(board, initrd, log_dir=log_dir)
    with vm:
        vm.console.expect(r"Run /init as init process", BOOT_TIMEOUT)
        times["kernel ran /init"] = time.monotonic() - vm.started_at
        for label, pattern in MARKERS[kind]:
            vm.console.expect(pattern, BOOT_TIMEOUT)
            times[label] = time.monotonic() - vm.started_at
        if disk:
            vm.console.expect(IMAGE_UP, BOOT_TIMEOUT)
            times["image init up"] = time.monotonic() - vm.started_at
            times["hand-over"] = times["image init up"] - times["modules loaded"]
            times["/init to image up"] = times["image init up"] - times["kernel ran /init"]
            if timeline is not None:
                vm.console.expect(r"\(sample\) / # ", BOOT_TIMEOUT)
                rc, text = vm.console.run(f"cat {TIMELINE}", timeout=60)
                if rc == 0:
                    timeline.write_text(text.strip() + "\n")
    times["/init to banner"] = times["banner"] - times["kernel ran /init"]
    return times


# The initramfs by component, for the size budget: (name, test on the path inside the initramfs).
COMPONENTS = [
    ("crypto (libsodium)", lambda p: "libsodium" in p),
    ("Python runtime (libpython, extensions)", lambda p: p.startswith("bankboot/") and not p.endswith(".zip")),
    ("Python stdlib + our code (init's archive)", lambda p: p in ("init", "bankboot/base_library.zip")),
    ("busybox", lambda p: p == "bin/busybox"),
    ("kernel modules", lambda p: p.startswith("lib/modules/")),
    ("libc, ld.so and other system libraries", lambda p: p.startswith(("lib/", "usr/"))),
    ("the rest (config, keys, device nodes)", lambda p: True),
]
BUDGET_MB = 5.0
STAGE_MB = 96  # the image bankctl stage copies (a realistic root filesystem, so start-up does not dominate)


def size_budget(initramfs: Path, method: str) -> list[tuple[str, int, int]]:
    """(component, unpacked bytes, zstd bytes) of an initramfs; the kit is these same files (no copy)."""
    import io
    import tarfile
    import tempfile

    from builder.compress import compress, decompress
    from builder.run import run

    with tempfile.TemporaryDirectory() as tmp:
        run(["cpio", "-id", "--quiet"], input=decompress(initramfs.read_bytes(), method), cwd=tmp, text=False)
        groups: dict[str, list[Path]] = {name: [] for name, _ in COMPONENTS}
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file() and not f.is_symlink():
                rel = str(f.relative_to(tmp))
                groups[next(name for name, test in COMPONENTS if test(rel))].append(f)
        rows = []
        for name, files in groups.items():
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for f in files:
                    tar.add(f, arcname=str(f.relative_to(tmp)))
            rows.append((name, sum(f.stat().st_size for f in files), len(compress(buf.getvalue(), "zstd"))))
    return rows


def time_verification(board: Board, initrd: Path, out: Path, key: Path) -> dict[str, float]:
    """In the guest: signature check and dm-verity setup at boot (bankboot.debug step times), then
    `bankctl stage` of a 96 MB image against sha256sum of the same bytes (bankctl's own start-up is in the
    time, as a user sees it)."""
    import os
    import re

    from builder.boot import disk_vm
    from builder.disk import build_disk
    from builder.image import build_image
    from builder.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs

    rootfs = build_sample_rootfs(board.arch, out / "rootfs-big", version="1.1.0")
    (rootfs / "payload").write_bytes(os.urandom(STAGE_MB << 20))  # incompressible: the squashfs keeps its size
    build_image(rootfs, "1.1.0", out / "big.bank", sign_key=key, persist=SAMPLE_PERSIST)
    disk = out / "disk-verify.img"
    # The update travels on the userdata partition: SD-card boards have no second disk.
    build_disk(board, out / "sample.bank", disk, 512 << 20, initrd, userdata_size=(STAGE_MB + 64) << 20,
               extra_cmdline="bankboot.timeout=0 bankboot.debug", userdata_files=[out / "big.bank"])
    res: dict[str, float] = {}
    with disk_vm(board, disk, out / "verify") as vm:
        m = vm.console.expect(r"verify manifest signature: ([\d.]+) ms", BOOT_TIMEOUT)
        res["signature check at boot (ms)"] = float(m.group(1))
        m = vm.console.expect(r"mount \S+rootfs\.squashfs: ([\d.]+) ms", BOOT_TIMEOUT)
        res["verity setup + squashfs mount (ms)"] = float(m.group(1))
        vm.console.expect(r"\(sample\) / # ", BOOT_TIMEOUT)
        size = (out / "big.bank").stat().st_size / 1e6
        for label, cmd in (("sha256sum (MB/s)", "sha256sum /userdata/big.bank >/dev/null"),
                           ("bankctl stage (MB/s)", f"{BIN}/bankctl stage /userdata/big.bank >/dev/null")):
            rc, text = vm.console.run(f"busybox time -p sh -c '{cmd}' 2>&1", timeout=600)
            if rc != 0:
                raise RuntimeError(f"bench: `{cmd}` failed in the guest:\n{text}")
            found = re.search(r"real ([\d.]+)", text)
            if found is None:
                raise RuntimeError(f"bench: no time from `{cmd}` in the guest:\n{text}")
            secs = float(found.group(1))
            res[label] = size / secs
    return res


LABELS = ["/init to banner", "modules loaded", "hand-over", "/init to image up", "image init up"]


def run_bench(board: Board, runs: int = 3) -> int:
    """Default settings (the ESC window in place), each run on a disk fresh from `bankboot disk`: its first
    boot, then a later one; medians of `runs`. Also the size budget, a picture of the boot, and the
    verification and staging numbers."""
    import shutil

    out = build_dir() / "bench" / board.name
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench: {board.name} ({board.description}), {runs} run(s) each, times from QEMU start (median), "
          f"default settings")
    from builder.disk import build_disk
    from builder.image import build_image
    from builder.initramfs import TrustPolicy
    from builder.keys import keygen
    from builder.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
    from builder.timeline import phases, read_timeline, render_svg

    key = out / "bench"
    if not key.with_suffix(".key").exists():
        keygen(key, "bankboot bench")
    rootfs = build_sample_rootfs(board.arch, out / "rootfs")
    build_image(rootfs, "1.0.0", out / "sample.bank", sign_key=key.with_suffix(".key"), persist=SAMPLE_PERSIST)
    policy = TrustPolicy(keys=(key.with_suffix(".pub"),))
    rows = []
    for kind in ("frozen", "busybox-sh"):
        result = build_initramfs(board, out / f"initramfs-{kind}.img", init=kind, policy=policy)
        fresh = out / f"disk-{kind}.img"
        build_disk(board, out / "sample.bank", fresh, 256 << 20, result.path)
        samples: dict[str, dict[str, list[float]]] = {"first boot": {}, "later boots": {}}
        for i in range(runs):
            disk = out / f"disk-{kind}-run.img"
            shutil.copyfile(fresh, disk)
            for which in ("first boot", "later boots"):
                keep = out / "timeline.json" if kind == "frozen" and i == 0 and which == "later boots" else None
                for label, t in time_boot(board, result.path, kind, out / kind, disk, keep).items():
                    samples[which].setdefault(label, []).append(t)
        medians = {w: {k: statistics.median(v) for k, v in got.items()} for w, got in samples.items()}
        rows.append((kind, result, medians))
    head = "  ".join(f"{lbl:>18}" for lbl in LABELS)
    print(f"{'init':<12} {'boot':<12} {'compressed':>11} {'unpacked':>10}  {head}")
    for kind, result, by in rows:
        for which, med in by.items():
            print(f"{kind:<12} {which:<12} {result.compressed / 1e6:>8.2f} MB {result.unpacked / 1e6:>7.2f} MB  "
                  + "  ".join(f"{med[lbl]:>16.2f} s" for lbl in LABELS))
    frozen, base = rows[0][2], rows[1][2]
    print("hand-over: from modules loaded to the image's init printing its first line; /init to image up "
          "includes the ESC window (bankboot.timeout, counted from the init's start)")
    for which in ("first boot", "later boots"):
        print(f"{which}: /init to banner {frozen[which]['/init to banner']:.2f} s (target 0.25); /init to image "
              f"up {frozen[which]['/init to image up'] / base[which]['/init to image up']:.2f}x busybox-sh, "
              f"hand-over {frozen[which]['hand-over'] / base[which]['hand-over']:.2f}x (targets 1.2x)")
    print(f"\nsize budget ({board.compression}, target {BUDGET_MB:g} MB; bankctl's kit is these files, not a copy):")
    total = 0
    for name, raw, packed in size_budget(rows[0][1].path, rows[0][1].compression):
        total += packed
        print(f"  {name:<44} {raw / 1e6:7.2f} MB unpacked {packed / 1e6:6.2f} MB zstd")
    within = "within budget" if rows[0][1].compressed <= BUDGET_MB * 1e6 else "OVER BUDGET"
    print(f"  {'sum of the parts':<44} {'':>18} {total / 1e6:6.2f} MB; the initramfs: "
          f"{rows[0][1].compressed / 1e6:.2f} MB ({within})")
    order = ["kernel ran /init", "banner", "modules loaded", "image init up"]
    groups = [(f"{kind} ({which}, median)", phases(by[which], order)) for kind, _, by in rows
              for which in ("first boot", "later boots")]
    if (out / "timeline.json").is_file():
        groups.append(("bankboot init steps (guest clock, one later boot)", read_timeline(out / "timeline.json")))
    svg = out / "boot.svg"
    svg.write_text(render_svg(groups, f"{board.name}: where the boot's time goes"))
    print(f"picture of the boot: {svg}")
    for label, value in time_verification(board, rows[0][1].path, out, key.with_suffix(".key")).items():
        print(f"{label:<40} {value:8.1f}")
    plain = frozen["later boots"]["image init up"]
    kexec = time_kexec(board, rows[0][1].path, out, key.with_suffix(".key"), runs)
    if kexec is None:
        print(f"kexec: {board.name} does not kexec images' own kernels (docs/boards.md)")
    else:
        print(f"image on its own kernel (loader, kexec, second kernel): image init up {kexec:.2f} s from QEMU start, "
              f"{kexec - plain:+.2f} s against the loader's kernel ({plain:.2f} s)")
    return 0


def time_kexec(board: Board, initrd: Path, out: Path, key: Path, runs: int) -> float | None:
    """Median QEMU start -> image init up for a disk whose current image carries Debian's other kernel
    flavour (parts.SECOND_KERNELS): the loader boots, kexecs it, and the second stage boots the image."""
    from builder.disk import build_disk
    from builder.image import build_image
    from builder.initramfs import read_settings
    from builder.parts import SECOND_KERNELS, locate_kernel_package
    from builder.samplerootfs import SAMPLE_PERSIST, add_kernel_modules, build_sample_rootfs

    if board.arch.debian not in SECOND_KERNELS or read_settings(initrd)[0].kexec == "none":
        return None
    second = locate_kernel_package(board.arch, SECOND_KERNELS[board.arch.debian])
    rootfs = build_sample_rootfs(board.arch, out / "rootfs-kexec", version="1.0.0")
    add_kernel_modules(rootfs, second, board.modules)
    build_image(rootfs, "1.0.0", out / "kexec.bank", sign_key=key, persist=SAMPLE_PERSIST, kernel=second.image,
                kernel_board=board)
    fresh = out / "disk-kexec.img"
    build_disk(board, out / "kexec.bank", fresh, 256 << 20, initrd)
    times = []
    for _ in range(runs):
        from builder.boot import disk_vm

        with disk_vm(board, fresh, out / "kexec") as vm:
            vm.console.expect(r"kexec: starting kernel", BOOT_TIMEOUT)
            vm.console.expect(IMAGE_UP, BOOT_TIMEOUT)
            times.append(time.monotonic() - vm.started_at)
    return statistics.median(times)
