"""`bankboot`: the host-side command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from builder.board import DEFAULT_BOARD, board_names, load_board
from builder.paths import build_dir


def _human(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def cmd_deps(args: argparse.Namespace) -> int:
    """Fetch what building for the boards needs: kernels, busybox, the target Python sysroots."""
    from builder.parts import fetch_busybox, fetch_kernel
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
        print(f"python  {arch.debian:16} {fetch_sysroot(arch).root}")
    return 0


def default_initramfs_path(board_name: str) -> Path:
    return build_dir() / board_name / "initramfs.img"


def cmd_initramfs(args: argparse.Namespace) -> int:
    from builder.initramfs import build_initramfs

    board = load_board(args.board)
    out = Path(args.output) if args.output else default_initramfs_path(board.name)
    result = build_initramfs(board, out, init=args.init, compression_method=args.compression)
    print(f"{result.path}: {_human(result.compressed)} {result.compression} "
          f"({_human(result.unpacked)} unpacked) for {board.name}, kernel {result.kernel.version}")
    return 0


def cmd_qemu(args: argparse.Namespace) -> int:
    from qemu.interactive import run_interactive

    board = load_board(args.board)
    initrd = Path(args.initramfs) if args.initramfs else default_initramfs_path(board.name)
    return run_interactive(board, initrd=initrd, disks=[Path(d) for d in args.disk], append=args.append)


def cmd_bench(args: argparse.Namespace) -> int:
    from builder.bench import run_bench

    return run_bench(load_board(args.board), runs=args.runs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bankboot", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("deps", help="fetch kernels, busybox and the target Python sysroots into build/cache")
    d.add_argument("--board", default="all", help="a board name, or all (default)")
    d.set_defaults(func=cmd_deps)

    i = sub.add_parser("initramfs", help="build a board's initramfs")
    i.add_argument("--board", default=DEFAULT_BOARD)
    i.add_argument("-o", "--output", help="default: build/<board>/initramfs.img")
    i.add_argument("--init", default="frozen", choices=["frozen", "busybox-sh"],
                   help="busybox-sh builds the plain-shell baseline used by benchmarks")
    i.add_argument("--compression", choices=["zstd", "gzip", "xz", "lz4", "none"],
                   help="override the board's compression")
    i.set_defaults(func=cmd_initramfs)

    q = sub.add_parser("qemu", help="boot a board in QEMU on this terminal (Ctrl-A x quits)")
    q.add_argument("--board", default=DEFAULT_BOARD)
    q.add_argument("--initramfs", help="default: build/<board>/initramfs.img")
    q.add_argument("--disk", action="append", default=[], help="a raw disk image to attach (repeatable)")
    q.add_argument("--append", default="", help="extra kernel command line")
    q.set_defaults(func=cmd_qemu)

    b = sub.add_parser("bench", help="initramfs size and boot time against a busybox-sh baseline")
    b.add_argument("--board", default=DEFAULT_BOARD)
    b.add_argument("--runs", type=int, default=3)
    b.set_defaults(func=cmd_bench)
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
