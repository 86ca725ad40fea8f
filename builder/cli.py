"""`bankboot`: the host-side command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from builder.board import DEFAULT_BOARD, board_names, load_board
from builder.paths import build_dir


def _human(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def cmd_deps(args: argparse.Namespace) -> int:
    """Fetch what building for the boards needs: kernels, busybox, the target Python sysroots."""
    from builder.parts import (
        SECOND_KERNELS,
        fetch_busybox,
        fetch_kernel,
        fetch_kernel_package,
        fetch_kexec_tools,
        fetch_systemd_boot,
    )
    from builder.pysysroot import fetch_sysroot

    names = board_names() if args.board == "all" else [args.board]
    arches = {}
    for name in names:
        board = load_board(name)
        k = fetch_kernel(board)
        print(f"kernel  {board.name:16} {k.version}")
        arches[board.arch.debian] = board.arch
    for arch in arches.values():
        print(f"busybox {arch.debian:16} {fetch_busybox(arch)}")
        print(f"kexec   {arch.debian:16} {fetch_kexec_tools(arch)}")
        if arch.debian in ("amd64", "arm64"):
            print(f"sd-boot {arch.debian:16} {fetch_systemd_boot(arch)}")
        print(f"python  {arch.debian:16} {fetch_sysroot(arch).root}")
        if arch.debian in SECOND_KERNELS:  # what kexec tests put in images
            second = fetch_kernel_package(arch, SECOND_KERNELS[arch.debian])
            print(f"kernel  {arch.debian + ' (2nd)':16} {second.version}")
    return 0


def default_initramfs_path(board_name: str) -> Path:
    return build_dir() / board_name / "initramfs.img"


def cmd_initramfs(args: argparse.Namespace) -> int:
    from builder.initramfs import TrustPolicy, build_initramfs

    board = load_board(args.board)
    out = Path(args.output) if args.output else default_initramfs_path(board.name)
    keys = tuple(Path(k) for arg in args.trust for k in arg.replace(",", " ").split())
    policy = TrustPolicy(keys, args.insecure_allow_unsigned, args.allow_downgrade)
    if args.sealed:
        board = dataclasses.replace(board, sealed=True)
    if args.insecure_allow_unsigned:
        print("WARNING: this initramfs accepts UNSIGNED images (--insecure-allow-unsigned): development only",
              file=sys.stderr)
    result = build_initramfs(board, out, init=args.init, compression_method=args.compression, policy=policy)
    print(f"{result.path}: {_human(result.compressed)} {result.compression} "
          f"({_human(result.unpacked)} unpacked) for {board.name}, kernel {result.kernel.version}")
    return 0


def cmd_qemu(args: argparse.Namespace) -> int:
    from builder.boot import run_interactive

    board = load_board(args.board)
    initrd = Path(args.initramfs) if args.initramfs else default_initramfs_path(board.name)
    return run_interactive(board, initrd=initrd, disks=[Path(d) for d in args.disk], append=args.append,
                           from_disk=args.from_disk, net=args.net)


def cmd_image(args: argparse.Namespace) -> int:
    from builder.image import build_image
    from overlay_layout.manifest import describe_persist

    m = build_image(Path(args.rootfs), args.version, Path(args.output), image_id=args.id,
                    sign_key=Path(args.sign) if args.sign else None, confirm_boots=args.confirm_boots,
                    persist=args.persist or None, arch=args.arch,
                    kernel=Path(args.kernel) if args.kernel else None,
                    kernel_initramfs=Path(args.initramfs) if args.initramfs else None, kernel_board=args.board,
                    kernel_append=args.kernel_append, trust=tuple(Path(t) for t in args.trust))
    signed = f"signed by key {m['key']}" if "signature" in m else "UNSIGNED"
    sealed = f"sealed, persistent: {describe_persist(m['persist'])}" if "persist" in m else \
        "UNSEALED (the whole root keeps changes; --persist DIR seals it)"
    own = f", kernel {m['kernel']['release']}" if "kernel" in m else ""
    print(f"{args.output}: image {m['id']} version {m['version']} ({m['arch']}{own}), squashfs "
          f"{_human(m['size'])} sha256 {m['sha256']}, {signed}, {sealed}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from builder.keys import keygen

    private, public, kid = keygen(Path(args.output), args.comment)
    print(f"{private} (private: keep it secret), {public} (public: give it to `make initramfs TRUST=`); key id {kid}")
    return 0


def cmd_disk(args: argparse.Namespace) -> int:
    from builder.disk import build_disk, parse_size

    board = load_board(args.board)
    initrd = Path(args.initramfs) if args.initramfs else default_initramfs_path(board.name)
    layout, m = build_disk(board, Path(args.image), Path(args.output), parse_size(args.size), initrd,
                           userdata_size=parse_size(args.userdata_size), extra_cmdline=args.append,
                           boot_size=parse_size(args.boot_size), firmware=args.firmware or board.firmware)
    print(f"{args.output}: {board.name} disk for {args.firmware or board.firmware} boot, {args.size}, "
          f"image {m['id']} current; "
          f"banks PARTUUID={layout.partuuid(2)}, userdata PARTUUID={layout.partuuid(3)}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """A bank file's or a disk image's manifests, signers, and whether they verify (like `rauc info`). Exit
    0 when it verifies (a disk: its current image), 1 when it does not."""
    from builder.inspect import describe, inspect_file, to_json

    keys = tuple(Path(k) for arg in args.trust for k in arg.replace(",", " ").split())
    report = inspect_file(Path(args.file), keys, Path(args.initramfs) if args.initramfs else None)
    print(to_json(report) if args.json else "\n".join(describe(Path(args.file), report)))
    return 0 if report["ok"] else 1


def cmd_delta(args: argparse.Namespace) -> int:
    from builder.delta import delta

    need, size = delta([Path(p) for p in args.old], Path(args.new))
    print(f"{args.new}: {need / 1e6:.2f} MB of {size / 1e6:.2f} MB ({100 * need / max(size, 1):.1f}%) come from "
          f"the network to a device holding {', '.join(args.old)}; the rest from its own images")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from builder.serve import serve

    return serve(Path(args.dir), args.port, args.bind, args.rate, args.tls, Path(args.cert) if args.cert else None,
                 Path(args.key) if args.key else None, Path(args.client_ca) if args.client_ca else None)


def cmd_sample_rootfs(args: argparse.Namespace) -> int:
    from builder.samplerootfs import build_sample_rootfs

    board = load_board(args.board)
    path = build_sample_rootfs(board.arch, Path(args.output), version=args.version, mark_good=not args.no_mark_good,
                               failing_selftest=args.failing_selftest)
    print(f"{path}: sample rootfs for {board.arch.debian}, version {args.version}")
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    """Draw one or more boot timelines (timeline.json from a device) as an SVG bar chart."""
    from builder.timeline import read_timeline, render_svg

    groups = [(Path(f).name, read_timeline(Path(f))) for f in args.file]
    Path(args.output).write_text(render_svg(groups, args.title))
    print(f"{args.output}: {sum(len(s) for _, s in groups)} steps from {len(groups)} timeline(s)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from builder.bench import run_bench

    parts = tuple(args.only.split(",")) if args.only else ()
    return run_bench(load_board(args.board), runs=args.runs, clock=args.clock, parts=parts)


def cmd_bench_net(args: argparse.Namespace) -> int:
    from builder.netbench import print_netbench, run_netbench
    from builder.paths import build_dir

    board = load_board(args.board)
    res = run_netbench(board, build_dir() / "bench-net" / board.name)
    print(f"bench-net: {board.name}, loopback nginx through QEMU's user network")
    print_netbench(res)
    return 0


def cmd_faults(args: argparse.Namespace) -> int:
    import random
    import signal
    import sys

    # Stopped from outside: unwind, so every QEMU of the campaign is stopped with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from builder.faults import DISK_CLASSES, run_campaign
    from builder.paths import build_dir

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    out = Path(args.output) if args.output else build_dir() / "faults"
    classes = () if args.no_disk_faults else DISK_CLASSES
    if args.only:
        classes = tuple(c for c in args.only.split(",") if c)
        unknown = sorted(set(classes) - set(DISK_CLASSES))
        if unknown:
            print(f"bankboot faults: unknown disk-fault class {', '.join(unknown)}; known: {', '.join(DISK_CLASSES)}",
                  file=sys.stderr)
            return 2
    report = run_campaign(load_board(args.board), out, seed, args.cuts, classes, loader_rounds=args.loader_rounds)
    print(f"report: {out / 'report.json'}")
    return 0 if report["recovered"] == report["injections"] and report["bytes_lost"] == 0 else 1


BOARD_HELP = f"a board file's name (builder/boards/*.toml) or path; default {DEFAULT_BOARD}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bankboot", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("deps", help="fetch kernels, busybox and the target Python sysroots into build/cache")
    d.add_argument("--board", default="all", help="a board name, or all (default)")
    d.set_defaults(func=cmd_deps)

    i = sub.add_parser("initramfs", help="build a board's initramfs")
    i.add_argument("--board", default=DEFAULT_BOARD, help=BOARD_HELP)
    i.add_argument("-o", "--output", help="default: build/<board>/initramfs.img")
    i.add_argument("--init", default="frozen", choices=["frozen", "busybox-sh"],
                   help="busybox-sh builds the plain-shell baseline used by benchmarks")
    i.add_argument("--compression", choices=["zstd", "gzip", "xz", "lz4", "none"],
                   help="override the board's compression")
    i.add_argument("--trust", action="append", default=[], metavar="KEY.pub",
                   help="public key(s) whose signed images the device accepts (repeatable, or comma-separated)")
    i.add_argument("--insecure-allow-unsigned", action="store_true",
                   help="also accept unsigned images (development only; bankctl status says so loudly)")
    i.add_argument("--allow-downgrade", action="store_true",
                   help="let `bankctl stage --allow-downgrade` install versions below the anti-rollback floor")
    i.add_argument("--sealed", action="store_true",
                   help="a field build: no rescue shell, init= and unknown bankboot.* options ignored, the "
                        "console menu offers only signed images above the floor (board key boot.sealed)")
    i.set_defaults(func=cmd_initramfs)

    q = sub.add_parser("qemu", help="boot a board in QEMU on this terminal (Ctrl-A x quits)")
    q.add_argument("--board", default=DEFAULT_BOARD, help=BOARD_HELP)
    q.add_argument("--initramfs", help="default: build/<board>/initramfs.img")
    q.add_argument("--disk", action="append", default=[], help="a raw disk image to attach (repeatable)")
    q.add_argument("--append", default="", help="extra kernel command line")
    q.add_argument("--net", action="store_true", help="a NIC on QEMU's user-mode network (the host is 10.0.2.2: "
                                                      "bankboot serve)")
    q.add_argument("--from-initramfs", dest="from_disk", action="store_false", default=True,
                   help="with --disk: boot the kernel and --initramfs given here, not those on the disk")
    q.set_defaults(func=cmd_qemu)

    im = sub.add_parser("image", help="make a bank file (squashfs + manifest) from a rootfs directory")
    im.add_argument("--rootfs", required=True, metavar="DIR", help="the root filesystem directory to pack")
    im.add_argument("--version", required=True, help="the image's semantic version (MAJOR.MINOR.PATCH); "
                                                     "anti-rollback compares it")
    im.add_argument("--id", help="image id (default: VERSION-<sha256 prefix>)")
    im.add_argument("--sign", metavar="KEY.key", help="sign the manifest with this private key")
    im.add_argument("--confirm-boots", action="store_true",
                    help="the image runs `bankctl boot-ok` once up; boots without it count towards a fallback")
    im.add_argument("--persist", action="append", default=[], metavar="DIR[:suid][,dev]",
                    help="a directory whose changes are kept (repeatable); with any, the image is sealed: "
                         "everything else is the verified squashfs under a tmpfs, reset at every boot. It is "
                         "mounted nosuid,nodev unless :suid (setuid files work there) or :dev (device nodes do) "
                         "follows, e.g. /var:suid or /srv:suid,dev")
    im.add_argument("--arch", help="the image's Debian architecture (amd64, arm64, armhf); default: read from its "
                                   "/sbin/init (an ELF program, or a script's interpreter)")
    im.add_argument("--kernel", metavar="FILE",
                    help="the image carries this kernel (arm64 Image/vmlinuz or x86_64 bzImage; its modules in the "
                         "rootfs's /lib/modules): the init on the boot partition kexecs it (docs/lifecycle.md)")
    im.add_argument("--initramfs", metavar="FILE", help="with --kernel: the bankboot initramfs that kernel boots")
    im.add_argument("--board", help="with --kernel: build that initramfs for this board's settings, with the "
                                    "kernel's modules from the rootfs, trusting the signing key and --trust")
    im.add_argument("--trust", action="append", default=[], metavar="KEY.pub",
                    help="with --board: another key the built initramfs trusts (repeatable)")
    im.add_argument("--kernel-append", default="", metavar="PARAMS",
                    help="with --kernel: kernel parameters added to the command line when it is kexec'd")
    im.add_argument("-o", "--output", required=True, metavar="FILE.bank", help="the bank file to write")
    im.set_defaults(func=cmd_image)

    kg = sub.add_parser("keygen", help="make an ed25519 key pair: PREFIX.key (private) and PREFIX.pub")
    kg.add_argument("-o", "--output", required=True, metavar="PREFIX", help="writes PREFIX.key and PREFIX.pub")
    kg.add_argument("--comment", default="", help="a note stored in both files (who the key is for)")
    kg.set_defaults(func=cmd_keygen)

    dk = sub.add_parser("disk", help="make a partitioned disk image (boot, banks, userdata)")
    dk.add_argument("--board", default=DEFAULT_BOARD, help=BOARD_HELP)
    dk.add_argument("--image", required=True, help="the bank file that becomes `current`")
    dk.add_argument("--initramfs", help="default: build/<board>/initramfs.img")
    dk.add_argument("--size", default="512M", help="the whole disk's size (default 512M)")
    dk.add_argument("--userdata-size", default="64M", help="size of the userdata partition (default 64M)")
    dk.add_argument("--boot-size", default="64M",
                    help="size of the boot partition (default 64M; images with their own kernels need room for two "
                         "loaders to install one: 160M for Debian's arm64 kernel)")
    dk.add_argument("--append", default="", help="extra kernel command line (cmdline.txt, or the loader slot's)")
    dk.add_argument("--firmware", choices=("direct", "uboot", "uefi"),
                    help="what boots the disk: U-Boot distro boot (boot.scr, two loader slots), UEFI (systemd-boot "
                         "entries on the ESP) or direct (QEMU's -kernel, cmdline.txt); default: the board file's")
    dk.add_argument("-o", "--output", required=True, metavar="DISK.img", help="the raw disk image to write")
    dk.set_defaults(func=cmd_disk)

    ins = sub.add_parser("inspect", help="a bank file's or a disk image's images, signers, and whether they "
                                          "verify (like rauc info)")
    ins.add_argument("file", help="a bank file, or a disk image (checked against the initramfs on its boot "
                                  "partition unless --trust or --initramfs is given)")
    ins.add_argument("--trust", action="append", default=[], metavar="KEY.pub",
                     help="check the signature against these public keys (repeatable, or comma-separated)")
    ins.add_argument("--initramfs", help="check it as this initramfs would at boot (its keys and settings)")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(func=cmd_inspect)

    dl = sub.add_parser("delta", help="how much of a new bank file a device holding older ones fetches over the "
                                      "network (bankctl stage URL)")
    dl.add_argument("old", nargs="+", help="bank file(s) the device holds (current, previous)")
    dl.add_argument("new", help="the update's bank file")
    dl.set_defaults(func=cmd_delta)

    sv = sub.add_parser("serve", help="serve bank files over HTTP (nginx) for `bankctl stage URL`")
    sv.add_argument("dir", help="the directory of bank files")
    sv.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    sv.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1, which QEMU guests "
                                                        "reach as 10.0.2.2; 0.0.0.0 for devices on the network)")
    sv.add_argument("--rate", help="limit each download to this rate (nginx limit_rate, e.g. 500k): a slow link")
    sv.add_argument("--tls", action="store_true", help="HTTPS, with a certificate from a test CA made on first use "
                                                       "(build/serve-tls/ca.pem: give it to devices with --ca)")
    sv.add_argument("--cert", metavar="FILE", help="HTTPS with this server certificate (PEM) instead")
    sv.add_argument("--key", metavar="FILE", help="the key of --cert (default: in --cert)")
    sv.add_argument("--client-ca", metavar="FILE", help="HTTPS that requires a client certificate signed by this CA "
                                                        "(mTLS; build/serve-tls/ca.pem signs the test device.pem)")
    sv.set_defaults(func=cmd_serve)

    sr = sub.add_parser("sample-rootfs", help="build the busybox sample rootfs used by demos and tests")
    sr.add_argument("--board", default=DEFAULT_BOARD, help=BOARD_HELP + " (its architecture's busybox)")
    sr.add_argument("--version", default="1.0.0", help="written to /etc/sample-version (default 1.0.0)")
    sr.add_argument("--no-mark-good", action="store_true", help="a trial of this image never commits itself")
    sr.add_argument("--failing-selftest", action="store_true", help="ship a selftest.d check that fails")
    sr.add_argument("-o", "--output", required=True, metavar="DIR", help="the directory to create (replaced)")
    sr.set_defaults(func=cmd_sample_rootfs)

    t = sub.add_parser("timeline", help="draw boot timelines (bankctl timeline --json, or the device's "
                                        "/run/bankboot/timeline.json) as an SVG bar chart")
    t.add_argument("file", nargs="+", help="timeline JSON file(s); each is drawn on its own clock")
    t.add_argument("-o", "--output", required=True, help="the SVG file to write")
    t.add_argument("--title", default="bankboot boot timeline", help="the chart's title")
    t.set_defaults(func=cmd_timeline)

    b = sub.add_parser("bench", help="initramfs size and boot time against a busybox-sh baseline")
    b.add_argument("--board", default=DEFAULT_BOARD, help=BOARD_HELP)
    b.add_argument("--runs", type=int, default=3, help="boots per measurement; the median is reported (default 3)")
    b.add_argument("--clock", choices=("icount", "host"), default="icount",
                   help="icount: QEMU's instruction clock, deterministic (default); host: wall time under TCG/KVM")
    b.add_argument("--only", metavar="PART,...", help="only these parts: boot, size, unpack, stage, kexec")
    b.set_defaults(func=cmd_bench)
    bn = sub.add_parser("bench-net", help="stage throughput over https and http against curl, a one-package "
                                          "delta with and without gap coalescing (QEMU, instruction clock)")
    bn.add_argument("--board", default=DEFAULT_BOARD, help=BOARD_HELP)
    bn.set_defaults(func=cmd_bench_net)

    f = sub.add_parser("faults", help="the never-brick campaign: power cuts and disk faults in QEMU, then recovery")
    f.add_argument("--board", default=DEFAULT_BOARD, help=BOARD_HELP)
    f.add_argument("--seed", type=int, help="repeat a campaign (default: a new random seed, printed)")
    f.add_argument("--cuts", type=int, default=100, help="power cuts, spread over stage, mark-good, boot, reset, gc")
    f.add_argument("--no-disk-faults", action="store_true", help="only the power cuts")
    f.add_argument("--loader-rounds", type=int, default=2,
                   help="rounds of the loader classes (a power cut in install-loader, a new loader that panics, is "
                        "truncated or hangs) on a disk for the board's firmware (default 2; 0: none)")
    f.add_argument("--only", metavar="CLASS,...", help="only these disk-fault classes (with --cuts 0: nothing else)")
    f.add_argument("-o", "--output", help="default: build/faults (report.json, console logs in runs/)")
    f.set_defaults(func=cmd_faults)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, ValueError, OSError) as e:
        print(f"bankboot {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
