"""`bankboot`: the host-side command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from builder.board import DEFAULT_BOARD, board_names, load_board
from builder.lab.commands import BOARD_HELP, add_lab_commands
from builder.paths import default_initramfs_path, set_cache_dir
from initfs import VERSION
from overlay_layout.errors import EXIT_ERROR, BankbootError


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


def cmd_initramfs(args: argparse.Namespace) -> int:
    from builder.initramfs import TrustPolicy, build_initramfs

    board = load_board(args.board)
    out = Path(args.output) if args.output else default_initramfs_path(board.name)
    keys = paths(args.trust)
    policy = TrustPolicy(keys, args.insecure_allow_unsigned, args.allow_downgrade, args.threshold)
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
    from builder.lab.boot import run_interactive

    board = load_board(args.board)
    initrd = Path(args.initramfs) if args.initramfs else default_initramfs_path(board.name)
    return run_interactive(board, initrd=initrd, disks=[Path(d) for d in args.disk], append=args.append,
                           from_disk=args.from_disk, net=args.net)


def paths(args: list[str]) -> tuple[Path, ...]:
    """Files given with a repeatable option, each time one or several (comma or space separated)."""
    return tuple(Path(k) for arg in args for k in arg.replace(",", " ").split())


def cmd_image(args: argparse.Namespace) -> int:
    from builder.image import build_image
    from builder.imagetree import IMAGE_KERNEL
    from overlay_layout.manifest import describe_persist

    kernel = None if not args.kernel else IMAGE_KERNEL if args.kernel == IMAGE_KERNEL else Path(args.kernel)
    m = build_image(Path(args.rootfs) if args.rootfs else None, args.version, Path(args.output), image_id=args.id,
                    sign_key=paths(args.sign), confirm_boots=args.confirm_boots,
                    persist=args.persist or None, arch=args.arch, kernel=kernel,
                    kernel_initramfs=Path(args.initramfs) if args.initramfs else None, kernel_board=args.board,
                    kernel_append=args.kernel_append, trust=tuple(Path(t) for t in args.trust),
                    source=args.source, strict=args.strict, encrypt_to=paths(args.encrypt_to),
                    key_updates=Path(args.key_updates) if args.key_updates else None)
    signers = [s["key"] for s in m.get("signatures", [])]
    signed = f"signed by key{'s' if len(signers) > 1 else ''} {', '.join(signers)}" if signers else "UNSIGNED"
    if "key_updates" in m:
        signed += f", carrying key updates 1-{len(m['key_updates'])}"
    if "encryption" in m:
        signed += f", encrypted for key{'s' if len(m['encryption']['recipients']) > 1 else ''} " + \
            ", ".join(r["key"] for r in m["encryption"]["recipients"])
    sealed = f"sealed, persistent: {describe_persist(m['persist'])}" if "persist" in m else \
        "UNSEALED (the whole root keeps changes; --persist DIR seals it)"
    own = f", kernel {m['kernel']['release']}" if "kernel" in m else ""
    print(f"{args.output}: image {m['id']} version {m['version']} ({m['arch']}{own}), squashfs "
          f"{_human(m['size'])} sha256 {m['sha256']}, {signed}, {sealed}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from builder.keys import keygen

    private, public, kid = keygen(Path(args.output), args.comment, encryption=args.encryption)
    if args.encryption:
        print(f"{private} (private: the device's, where its board's device_key says), {public} (public: give it to "
              f"`bankboot image --encrypt-to`); key id {kid}")
    else:
        print(f"{private} (private: keep it secret), {public} (public: give it to `make initramfs TRUST=`); key id "
              f"{kid}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """One more signature on a bank file (nothing else in it changes), or on a chain file's last key update."""
    from builder.signing import sign_file

    print(sign_file(Path(args.file), paths(args.key), Path(args.device_key) if args.device_key else None))
    return 0


def cmd_key_update(args: argparse.Namespace) -> int:
    from builder.signing import add_key_update

    update, how = add_key_update(Path(args.chain), paths(args.keys), args.threshold, paths(args.sign),
                                 paths(args.root), args.root_threshold)
    print(f"{args.chain}: key update {update['serial']}: keys {', '.join(sorted(update['keys']))}, threshold "
          f"{update['threshold']}; {how}")
    return 0


def cmd_disk(args: argparse.Namespace) -> int:
    from builder.disk import MiB, bmap_path, build_disk, parse_size

    board = load_board(args.board)
    initrd = Path(args.initramfs) if args.initramfs else default_initramfs_path(board.name)
    layout, m = build_disk(board, Path(args.image), Path(args.output), parse_size(args.size), initrd,
                           userdata_size=parse_size(args.userdata_size), extra_cmdline=args.append,
                           boot_size=None if args.boot_size == "auto" else parse_size(args.boot_size),
                           firmware=args.firmware or board.firmware,
                           device_key=Path(args.device_key) if args.device_key else None)
    print(f"{args.output}: {board.name} disk for {args.firmware or board.firmware} boot, {args.size} "
          f"(boot partition {layout.parts[0][1] // MiB} MiB), image {m['id']} current; "
          f"banks PARTUUID={layout.partuuid(2)}, userdata PARTUUID={layout.partuuid(3)}; block map "
          f"{bmap_path(Path(args.output))} (bmaptool copy {args.output} /dev/sdX)")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """A bank file's or a disk image's manifests, signers, and whether they verify (like `rauc info`). Exit
    0 when it verifies (a disk: its current image), 1 when it does not."""
    from builder.inspect import describe, inspect_file, to_json

    report = inspect_file(Path(args.file), paths(args.trust), Path(args.initramfs) if args.initramfs else None,
                          Path(args.device_key) if args.device_key else None)
    print(to_json(report) if args.json else "\n".join(describe(Path(args.file), report)))
    return 0 if report["ok"] else 1


def cmd_publish(args: argparse.Namespace) -> int:
    """To a channel on a directory or S3 (DEST --channel), or to a registry as an OCI artifact (--oci)."""
    if args.format == "swu":
        return publish_swu(args)
    if args.oci:
        if args.dest or args.channel:
            raise SystemExit("bankboot publish: --oci pushes to a registry; give DEST and --channel without it")
        return push_oci(args)
    if not args.dest or not args.channel:
        raise SystemExit("bankboot publish: give DEST and --channel NAME (a channel), or --oci REF (a registry)")
    if not args.sign:
        raise SystemExit("bankboot publish: a channel document is signed: give --sign KEY.key")
    from builder.publish import publish
    from overlay_layout.utctime import parse_duration

    report = publish(Path(args.bank), args.channel, args.dest, paths(args.sign), args.board, args.min_version,
                     parse_duration(args.expires), args.endpoint_url,
                     device_key=Path(args.device_key) if args.device_key else None)
    for line in report.lines:
        print(line)
    print(f"devices poll: bankctl poll {report.document_url}")
    return 0


def publish_swu(args: argparse.Namespace) -> int:
    """A .swu for a hawkBit-DDI rollout server (builder/swu.py)."""
    if not args.dest or args.channel or args.oci:
        raise SystemExit("bankboot publish --format swu: give the .swu file to write as DEST (no --channel, no --oci)")
    from builder.swu import write_swu

    for line in write_swu(Path(args.bank), Path(args.dest), args.board, args.hw_revision):
        print(line)
    return 0


def push_oci(args: argparse.Namespace) -> int:
    from builder.ocipush import publish_oci

    p = publish_oci(Path(args.bank), args.oci, Path(args.token_file) if args.token_file else None, args.plain_http)
    print(f"{args.bank}: image {p.image_id} version {p.version} pushed to {p.ref}\n  pinned: {p.pinned}\n"
          f"  on a device: bankctl stage {p.blob_url}")
    return 0


def cmd_delta(args: argparse.Namespace) -> int:
    from builder.delta import delta

    need, size = delta([Path(p) for p in args.old], Path(args.new), Path(args.device_key) if args.device_key else None)
    print(f"{args.new}: {need / 1e6:.2f} MB of {size / 1e6:.2f} MB ({100 * need / max(size, 1):.1f}%) come from "
          f"the network to a device holding {', '.join(args.old)}; the rest from its own images")
    return 0




CACHE_HELP = ("where downloaded parts and frozen inits are kept (default: $BANKBOOT_CACHE, a checkout's build/cache, "
              "else $XDG_CACHE_HOME/bankboot)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bankboot", description=__doc__)
    p.add_argument("--version", action="version", version=f"bankboot {VERSION}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("deps", help="fetch kernels, busybox and the target Python sysroots into the cache (--cache)")
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
    i.add_argument("--threshold", type=int, default=1, metavar="N",
                   help="an image must be signed by at least N of the --trust keys (default 1: any one)")
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

    im = sub.add_parser("image", help="make a bank file (squashfs + manifest) from a rootfs directory, a container "
                                      "image or a tarball")
    what = im.add_mutually_exclusive_group(required=True)
    what.add_argument("--rootfs", metavar="DIR", help="the root filesystem directory to pack")
    what.add_argument("--from", dest="source", metavar="SOURCE",
                      help="an OCI layout DIR (or oci:DIR:NAME), a docker-archive or oci-archive FILE, "
                           "docker://REGISTRY/REPO:TAG, or a rootfs tarball FILE.tar[.gz|.zst|.xz] (docs/images.md)")
    im.add_argument("--strict", action="store_true", help="refuse the image when the lint finds anything, not "
                                                          "only what cannot boot")
    im.add_argument("--version", required=True, help="the image's semantic version (MAJOR.MINOR.PATCH); "
                                                     "anti-rollback compares it")
    im.add_argument("--id", help="image id (default: VERSION-<sha256 prefix>)")
    im.add_argument("--sign", action="append", default=[], metavar="KEY.key",
                    help="sign the manifest with this private key (repeatable: each adds a signature)")
    im.add_argument("--key-updates", metavar="CHAIN.json",
                    help="carry the key updates of this chain file (bankboot key-update): committed on a device, "
                         "they change the keys it trusts")
    im.add_argument("--encrypt-to", action="append", default=[], metavar="KEY.pub",
                    help="encrypt the bank for this device's or fleet's X25519 key (bankboot keygen --encryption; "
                         "repeatable)")
    im.add_argument("--confirm-boots", action="store_true",
                    help="the image runs `bankctl boot-ok` once up; boots without it count towards a fallback")
    im.add_argument("--persist", action="append", default=[], metavar="DIR[:suid][,dev]",
                    help="a directory whose changes are kept (repeatable); with any, the image is sealed: "
                         "everything else is the verified squashfs under a tmpfs, reset at every boot. It is "
                         "mounted nosuid,nodev unless :suid (setuid files work there) or :dev (device nodes do) "
                         "follows, e.g. /var:suid or /srv:suid,dev")
    im.add_argument("--arch", help="the image's Debian architecture (amd64, arm64, armhf); default: read from its "
                                   "/sbin/init (an ELF program, or a script's interpreter)")
    im.add_argument("--kernel", metavar="FILE|image",
                    help="the image carries this kernel (arm64 Image/vmlinuz or x86_64 bzImage; its modules in the "
                         "rootfs's /lib/modules), or `image`: the one in its /usr/lib/modules/<release>/vmlinuz, with "
                         "arguments from /usr/lib/bootc/kargs.d; the init on the boot partition kexecs it "
                         "(docs/lifecycle.md)")
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
    kg.add_argument("--encryption", action="store_true",
                    help="an X25519 key pair for encrypted banks (a device's or a fleet's), not a signing key")
    kg.set_defaults(func=cmd_keygen)

    sg = sub.add_parser("sign", help="add a signature to a bank file (nothing else in it changes) or to a chain "
                                     "file's last key update")
    sg.add_argument("file", help="a bank file, or a chain file (bankboot key-update)")
    sg.add_argument("--key", action="append", required=True, metavar="KEY.key", help="the private key (repeatable)")
    sg.add_argument("--device-key", metavar="KEY", help="an encrypted bank: a recipient's private key, to check "
                                                        "its files before signing")
    sg.set_defaults(func=cmd_sign)

    ku = sub.add_parser("key-update", help="append the next key update to a chain file: the whole set of keys "
                                           "devices trust after it (docs/trust.md, rotation)")
    ku.add_argument("chain", metavar="CHAIN.json", help="the chain file (made with --root when it does not exist)")
    ku.add_argument("--keys", action="append", required=True, metavar="KEY.pub",
                    help="the public keys trusted after this update (repeatable, or comma-separated)")
    ku.add_argument("--threshold", type=int, default=1, metavar="N", help="how many of them must sign (default 1)")
    ku.add_argument("--sign", action="append", default=[], metavar="KEY.key",
                    help="sign it (keys of the set before it and of the new set; more with bankboot sign)")
    ku.add_argument("--root", action="append", default=[], metavar="KEY.pub",
                    help="starting a chain: the keys the devices' initramfs trusts (bankboot initramfs --trust)")
    ku.add_argument("--root-threshold", type=int, default=1, metavar="N",
                    help="starting a chain: the initramfs's --threshold (default 1)")
    ku.set_defaults(func=cmd_key_update)

    dk = sub.add_parser("disk", help="make a partitioned disk image (boot, banks, userdata)")
    dk.add_argument("--board", default=DEFAULT_BOARD, help=BOARD_HELP)
    dk.add_argument("--image", required=True, help="the bank file that becomes `current`")
    dk.add_argument("--initramfs", help="default: build/<board>/initramfs.img")
    dk.add_argument("--size", default="512M", help="the whole disk's size (default 512M)")
    dk.add_argument("--userdata-size", default="64M", help="size of the userdata partition (default 64M)")
    dk.add_argument("--boot-size", default="auto",
                    help="size of the boot partition (default auto: room for two loaders of this kernel and "
                         "initramfs with half again to spare, so bankctl install-loader works: 128M with Debian's "
                         "arm64 kernel, 64M at least)")
    dk.add_argument("--append", default="", help="extra kernel command line (cmdline.txt, or the loader slot's)")
    dk.add_argument("--firmware", choices=("direct", "uboot", "uefi"),
                    help="what boots the disk: U-Boot distro boot (boot.scr, two loader slots), UEFI (systemd-boot "
                         "entries on the ESP) or direct (QEMU's -kernel, cmdline.txt); default: the board file's")
    dk.add_argument("--device-key", metavar="KEY", help="an encrypted --image: a recipient's private key")
    dk.add_argument("-o", "--output", required=True, metavar="DISK.img", help="the raw disk image to write")
    dk.set_defaults(func=cmd_disk)

    ins = sub.add_parser("inspect", help="a bank file's or a disk image's images, signers, and whether they "
                                          "verify (like rauc info)")
    ins.add_argument("file", help="a bank file, or a disk image (checked against the initramfs on its boot "
                                  "partition unless --trust or --initramfs is given)")
    ins.add_argument("--trust", action="append", default=[], metavar="KEY.pub",
                     help="check the signature against these public keys (repeatable, or comma-separated)")
    ins.add_argument("--initramfs", help="check it as this initramfs would at boot (its keys and settings)")
    ins.add_argument("--device-key", metavar="KEY",
                     help="an encrypted bank: a recipient's private key, to check its files")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(func=cmd_inspect)

    pb = sub.add_parser("publish", help="put a bank file and a signed channel document on a directory or an S3 "
                                        "bucket, for `bankctl poll` (docs/fleet.md); or, with --oci, push it to a "
                                        "container registry as an OCI artifact that devices stage from its blob URL")
    pb.add_argument("bank", help="the bank file to publish")
    pb.add_argument("dest", nargs="?", help="a directory (for any web server or CDN) or s3://BUCKET/PREFIX; with "
                                            "--format swu, the .swu file to write")
    pb.add_argument("--format", choices=["channel", "swu"], default="channel",
                    help="channel (default): a channel on DEST; swu: DEST is a .swu (SWUpdate's container) for a "
                         "hawkBit-DDI rollout server such as goosebit, polled by bankctl poll --hawkbit "
                         "(docs/hawkbit.md)")
    pb.add_argument("--hw-revision", action="append", default=[], metavar="REV",
                    help="--format swu: a hardware revision the release is for (repeatable; default: 'default', "
                         "what goosebit assumes of a device that names none)")
    pb.add_argument("--channel", help="the channel's name: the document is DEST/NAME.json")
    pb.add_argument("--sign", metavar="KEY.key", action="append", default=[],
                    help="a release key the document is signed with (repeatable, or comma-separated: as many as "
                         "the devices' threshold; devices check it as they check images, against the keys in force)")
    pb.add_argument("--device-key", metavar="KEY",
                    help="an encrypted bank: a recipient's private key, to check its files before publishing")
    pb.add_argument("--board", action="append", default=[], metavar="BOARD",
                    help="a board this release is for (repeatable): a board file's name or path")
    pb.add_argument("--min-version", metavar="VERSION", help="the lowest running version this release may replace")
    pb.add_argument("--expires", default="30d", metavar="DURATION",
                    help="how long devices take the document (default 30d; publish again to renew it)")
    pb.add_argument("--endpoint-url", metavar="URL", help="s3://: an S3-compatible store's endpoint (default: "
                                                          "AWS_ENDPOINT_URL, else AWS)")
    pb.add_argument("--oci", metavar="[docker://]HOST/REPO[:TAG]",
                    help="where to push it (the tag defaults to the bank's version); credentials as skopeo has them "
                         "(skopeo login, $REGISTRY_AUTH_FILE)")
    pb.add_argument("--token-file", metavar="FILE", help="a bearer token for the registry, read from FILE")
    pb.add_argument("--plain-http", action="store_true",
                    help="the registry speaks plain HTTP (a registry on loopback or a lab network): skopeo may "
                         "push without TLS and the blob URL printed is http://")
    pb.set_defaults(func=cmd_publish)

    dl = sub.add_parser("delta", help="how much of a new bank file a device holding older ones fetches over the "
                                      "network (bankctl stage URL)")
    dl.add_argument("old", nargs="+", help="bank file(s) the device holds (current, previous)")
    dl.add_argument("new", help="the update's bank file")
    dl.add_argument("--device-key", metavar="KEY", help="encrypted banks: a recipient's private key")
    dl.set_defaults(func=cmd_delta)


    add_lab_commands(sub)
    # --cache before or after the command; SUPPRESS: a command's own default must not undo the main one's.
    for parser in (p, *sub.choices.values()):
        parser.add_argument("--cache", metavar="DIR", default=argparse.SUPPRESS, help=CACHE_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives an optional positional (publish's DEST) its value only before the first option:
    # `publish BANK --format swu OUT` leaves OUT over
    if extra and getattr(args, "func", None) is cmd_publish and args.dest is None and len(extra) == 1 and \
            not extra[0].startswith("-"):
        args.dest, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "cache", None):
        set_cache_dir(Path(args.cache))
    # A user's error is a BankbootError (builder/errors.py): its message and its exit code; a file that is
    # missing or unreadable, its message and 1. Anything else is a bug in bankboot: its traceback.
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BankbootError as e:
        print(f"bankboot {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"bankboot {args.command}: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
