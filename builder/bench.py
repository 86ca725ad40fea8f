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

# (label, pattern) pairs the console must show, in order, per init kind.
MARKERS = {
    "frozen": [("banner", r"bankboot \S+ init on Linux"), ("modules loaded", r"loaded \d+ kernel modules")],
    "busybox-sh": [("banner", r"baseline busybox-sh init on Linux"),
                   ("modules loaded", r"baseline: loaded \d+ kernel modules")],
}
BOOT_TIMEOUT = 180
IMAGE_UP = r"sample-rootfs: up"


def time_boot(board: Board, initrd: Path, kind: str, log_dir: Path, disk: Path | None = None) -> dict[str, float]:
    from qemu.vm import VM

    times: dict[str, float] = {}
    vm = VM.from_disk(board, disk, log_dir) if disk else VM(board, initrd, log_dir=log_dir)
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
    return times


def crypto_size(bundle: Path) -> tuple[int, int]:
    """Bytes PyNaCl adds to the frozen init (its package, libsodium, cffi's backend): unpacked, zstd."""
    import io
    import tarfile

    from builder.compress import compress

    parts = [p for p in bundle.rglob("*") if p.is_file() and ("nacl" in p.parts or p.name.startswith(
        ("libsodium", "_cffi_backend")))]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in parts:
            tar.add(p, arcname=str(p.relative_to(bundle)))
    return sum(p.stat().st_size for p in parts), len(compress(buf.getvalue(), "zstd"))


def time_verification(board: Board, initrd: Path, out: Path, key: Path) -> dict[str, float]:
    """In the guest: signature check and dm-verity setup at boot (bankboot.debug step times), then
    `bankctl stage` of a 32 MB image against sha256sum of the same bytes."""
    import os
    import re

    from builder.disk import build_disk
    from builder.image import build_image
    from builder.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
    from qemu.vm import VM

    rootfs = build_sample_rootfs(board.arch, out / "rootfs-big", version="1.1.0")
    (rootfs / "payload").write_bytes(os.urandom(32 << 20))  # incompressible: squashfs stays 32 MB
    build_image(rootfs, "1.1.0", out / "big.bank", sign_key=key, persist=SAMPLE_PERSIST)
    disk = out / "disk-verify.img"
    # The update travels on the userdata partition: SD-card boards have no second disk.
    build_disk(board, out / "sample.bank", disk, 256 << 20, initrd, userdata_size=96 << 20,
               extra_cmdline="bankboot.timeout=0 bankboot.debug", userdata_files=[out / "big.bank"])
    res: dict[str, float] = {}
    with VM.from_disk(board, disk, out) as vm:
        m = vm.console.expect(r"verify manifest signature: ([\d.]+) ms", BOOT_TIMEOUT)
        res["signature check at boot (ms)"] = float(m.group(1))
        m = vm.console.expect(r"mount \S+rootfs\.squashfs: ([\d.]+) ms", BOOT_TIMEOUT)
        res["verity setup + squashfs mount (ms)"] = float(m.group(1))
        vm.console.expect(r"\(sample\) / # ", BOOT_TIMEOUT)
        size = (out / "big.bank").stat().st_size / 1e6
        for label, cmd in (("sha256sum (MB/s)", "sha256sum /userdata/big.bank >/dev/null"),
                           ("bankctl stage (MB/s)", "/run/bankboot/bin/bankctl stage /userdata/big.bank >/dev/null")):
            rc, text = vm.console.run(f"busybox time -p sh -c '{cmd}' 2>&1", timeout=600)
            if rc != 0:
                raise RuntimeError(f"bench: `{cmd}` failed in the guest:\n{text}")
            secs = float(re.search(r"real ([\d.]+)", text).group(1))
            res[label] = size / secs
    return res


def run_bench(board: Board, runs: int = 3) -> int:
    out = build_dir() / "bench" / board.name
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench: {board.name} ({board.description}), {runs} boot(s) each, times from QEMU start (median)")
    from builder.disk import build_disk
    from builder.image import build_image
    from builder.initramfs import TrustPolicy
    from builder.keys import keygen
    from builder.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs

    key = out / "bench"
    if not key.with_suffix(".key").exists():
        keygen(key, "bankboot bench")
    rootfs = build_sample_rootfs(board.arch, out / "rootfs")
    build_image(rootfs, "1.0.0", out / "sample.bank", sign_key=key.with_suffix(".key"), persist=SAMPLE_PERSIST)
    policy = TrustPolicy(keys=(key.with_suffix(".pub"),))
    rows = []
    for kind in ("frozen", "busybox-sh"):
        result = build_initramfs(board, out / f"initramfs-{kind}.img", init=kind, policy=policy)
        disk = out / f"disk-{kind}.img"
        build_disk(board, out / "sample.bank", disk, 256 << 20, result.path, extra_cmdline="bankboot.timeout=0")
        samples: dict[str, list[float]] = {}
        # One boot first, not counted: a device's first boot of a new initramfs also installs bankctl's kit
        # on the banks partition; every later boot is what this measures.
        time_boot(board, result.path, kind, out, disk)
        for _ in range(runs):
            for label, t in time_boot(board, result.path, kind, out, disk).items():
                samples.setdefault(label, []).append(t)
        rows.append((kind, result, {k: statistics.median(v) for k, v in samples.items()}))
    labels = ["kernel ran /init", "banner", "modules loaded", "image init up", "hand-over"]
    print(f"{'init':<12} {'compressed':>11} {'unpacked':>10}  " + "  ".join(f"{lbl:>16}" for lbl in labels))
    for kind, result, med in rows:
        print(f"{kind:<12} {result.compressed / 1e6:>8.2f} MB {result.unpacked / 1e6:>7.2f} MB  "
              + "  ".join(f"{med[lbl]:>14.2f} s" for lbl in labels))
    frozen, base = rows[0][2], rows[1][2]
    print("hand-over: from modules loaded to the image's init printing its first line (find and mount the banks, "
          "loop-mount the squashfs, overlay, /userdata, move mounts, switch root, exec)")
    print(f"frozen init costs {frozen['image init up'] - base['image init up']:+.2f} s to the image's init, "
          f"{(rows[0][1].compressed - rows[1][1].compressed) / 1e6:+.2f} MB compressed, against busybox-sh "
          f"({board.compression})")
    from builder.freeze import freeze_init
    from builder.pysysroot import locate_sysroot

    raw, packed = crypto_size(freeze_init(locate_sysroot(board.arch)))
    print(f"crypto library (PyNaCl + libsodium + cffi backend): {raw / 1e6:.2f} MB unpacked, "
          f"{packed / 1e6:.2f} MB zstd")
    for label, value in time_verification(board, rows[0][1].path, out, key.with_suffix(".key")).items():
        print(f"{label:<40} {value:8.1f}")
    return 0
