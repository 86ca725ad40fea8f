"""`bankboot bench-net`: what staging over the network costs, in a qemu-aarch64 guest on the instruction
clock (`-icount shift=0,sleep=on,align=off`: guest time is executed instructions at 1 ns each, idle time
passes at real speed), from Debian's nginx on the host:

- throughput of `bankctl stage` over https and http against Debian's curl (arm64, in the running image)
  fetching the same 64 MB bank file in the same guest;
- a one-package delta (libssl3 3.0.17 -> 3.0.20 in a Debian rootfs) with gap coalescing off, at the
  default and wider: time, requests and bytes;
- the TLS piece's load time.

Prints numbers; asserts nothing. Figures are also on QEMU's wall clock, for comparison."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import random
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from builder.board import Board
from builder.debian import download
from builder.errors import BuildError
from builder.paths import cache_dir
from builder.run import run

# Debian's curl and what it links (apt-cache depends --recurse curl, bookworm arm64), for the running image.
CURL_PACKAGES = ["curl", "libcurl4", "gcc-12-base", "libbrotli1", "libc6", "libcom-err2", "libdb5.3", "libffi8",
                 "libgcc-s1", "libgmp10", "libgnutls30", "libgssapi-krb5-2", "libhogweed6", "libidn2-0",
                 "libk5crypto3", "libkeyutils1", "libkrb5-3", "libkrb5support0", "libldap-2.5-0", "libnettle8",
                 "libnghttp2-14", "libp11-kit0", "libpsl5", "librtmp1", "libsasl2-2", "libsasl2-modules-db",
                 "libssh2-1", "libtasn1-6", "libunistring2", "libzstd1", "zlib1g"]
# More of a real root filesystem (Python's standard library), so the delta is measured among real files.
FILLER_PACKAGES = ["libpython3.11-minimal", "libpython3.11-stdlib", "python3.11-minimal", "libsqlite3-0",
                   "libexpat1", "liblzma5", "libbz2-1.0", "libncursesw6", "libtinfo6"]
DELTA = ("libssl3", "3.0.17-1~deb12u2", "3.0.20-1~deb12u2")  # the one package that changes
ICOUNT = ("-accel", "tcg,thread=single", "-icount", "shift=0,sleep=on,align=off")
BIG = 62 << 20  # random bytes in the throughput image: a 64 MB squashfs with the sample rootfs
GAPS = (0, 16 << 10, 64 << 10, 256 << 10)


@contextlib.contextmanager
def qemu_lock(path: str = "/tmp/qemu.lock") -> Iterator[None]:
    """One QEMU at a time on a shared machine (the house rule): held only while the guest runs."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _unpack_into(debs: list[Path], root: Path) -> None:
    for deb in debs:
        run(["dpkg-deb", "-x", str(deb), str(root)])


def _version_deb(name: str, version: str, arch: str) -> Path:
    dest = cache_dir() / "debs" / arch / "versions"
    dest.mkdir(parents=True, exist_ok=True)
    found = list(dest.glob(f"{name}_{version.replace(':', '%3a')}_{arch}.deb"))
    if not found:
        run(["apt-get", "download", f"{name}:{arch}={version}"], cwd=dest)
        found = list(dest.glob(f"{name}_*{version.split(':')[-1]}_{arch}.deb"))
    return found[0]


def _timed(vm, cmd: str, timeout: float = 900) -> tuple[float, float, str]:
    """(guest seconds, wall seconds, output) of a guest command."""
    start = time.monotonic()
    rc, text = vm.console.run(f"busybox time -p sh -c '{cmd}' 2>&1", timeout=timeout)
    wall = time.monotonic() - start
    found = re.search(r"real ([\d.]+)", text)
    if rc != 0 or found is None:
        raise BuildError(f"bench-net: `{cmd}` failed in the guest:\n{text[-3000:]}")
    return float(found.group(1)), wall, text


def run_netbench(board: Board, out: Path) -> dict[str, object]:
    """Build everything in `out` (an initramfs trusting a key made there), boot once, measure."""
    from builder.initramfs import TrustPolicy, build_initramfs
    from builder.keys import keygen

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    keygen(out / "bench", "bankboot bench-net")
    key = out / "bench.key"
    initrd = build_initramfs(board, out / "initramfs.img", policy=TrustPolicy(keys=(out / "bench.pub",))).path
    res = _measure(board, out / "work", key, initrd)
    res.update(gap_on_links(out / "work", key))
    return res


def _measure(board: Board, out: Path, key: Path, initrd: Path) -> dict[str, object]:
    from builder.disk import build_disk
    from builder.image import build_image
    from builder.lab.boot import disk_vm
    from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
    from builder.lab.serve import Server, ServeTls
    from builder.tls import make_ca, make_cert

    arch = board.arch.debian
    shutil.rmtree(out, ignore_errors=True)
    www = out / "www"
    www.mkdir(parents=True)
    pki = out / "pki"
    ca = make_ca(pki)
    server = make_cert(ca, pki, "server", ("10.0.2.2",))
    sign: dict[str, Any] = {"sign_key": key, "persist": SAMPLE_PERSIST}
    debs = download(CURL_PACKAGES + FILLER_PACKAGES, arch, cache_dir() / "debs" / arch)
    old_ssl, new_ssl = (_version_deb(DELTA[0], v, arch) for v in DELTA[1:])

    def rootfs(version: str, ssl: Path, name: str) -> Path:
        root = build_sample_rootfs(board.arch, out / name, version=version)
        _unpack_into([*debs, ssl], root)
        (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca[0], root / "etc/ssl/certs/ca-certificates.crt")
        return root

    build_image(rootfs("1.0.0", old_ssl, "rootfs-1.0.0"), "1.0.0", out / "app-1.0.0.bank", **sign)
    build_image(rootfs("1.1.0", new_ssl, "rootfs-1.1.0"), "1.1.0", www / "delta.bank", **sign)
    big = build_sample_rootfs(board.arch, out / "rootfs-big", version="2.0.0")
    (big / "payload").write_bytes(random.Random(64).randbytes(BIG))
    build_image(big, "2.0.0", www / "big.bank", **sign)
    fillers = []
    for n in range(2 * len(GAPS) + 4):
        filler = build_sample_rootfs(board.arch, out / f"rootfs-filler-{n}", version=f"5.0.{n}")
        fillers.append(f"filler-{n}.bank")
        build_image(filler, f"5.0.{n}", www / fillers[-1], **sign)
    disk = out / "disk.img"
    build_disk(board, out / "app-1.0.0.bank", disk, 1 << 30, initrd, userdata_size=16 << 20)
    shutil.copyfile(ca[0], out / "ca.pem")
    timed_board = dataclasses.replace(board, qemu_args=(*board.qemu_args, *ICOUNT))
    res: dict[str, object] = {"big.bank MB": (www / "big.bank").stat().st_size / 1e6,
                              "delta.bank MB": (www / "delta.bank").stat().st_size / 1e6}
    with qemu_lock(), Server(www) as plain, Server(www, tls=ServeTls(*server)) as tls, \
            disk_vm(timed_board, disk, out / "run", net=True) as vm:
        vm.console.expect(r"sample-rootfs: ready", 600)
        vm.console.expect(r"\(sample\) / # ", 600)
        ca_file = "/etc/ssl/certs/ca-certificates.crt"

        def displace() -> None:
            """Make the staged image unpointed and remove it, so the next stage starts from nothing."""
            vm.console.run(f"bankctl stage {plain.url(fillers.pop(), '10.0.2.2')} >/dev/null 2>&1; bankctl gc",
                           timeout=600)

        size = (www / "big.bank").stat().st_size
        for proto, srv in (("http", plain), ("https", tls)):
            url = srv.url("big.bank", "10.0.2.2")
            guest, wall, _ = _timed(vm, f"curl -s --cacert {ca_file} -o /dev/null {url}")
            res[f"curl {proto} to /dev/null MB/s (instruction clock / wall)"] = (size / 1e6 / guest, size / 1e6 / wall)
            disk_file = "/run/bankboot/banks/curl.out"
            guest, wall, _ = _timed(vm, f"curl -s --cacert {ca_file} -o {disk_file} {url} && sync")
            vm.console.run(f"rm -f {disk_file}", timeout=60)
            res[f"curl {proto} to the banks partition MB/s (instruction clock / wall)"] = (size / 1e6 / guest,
                                                                                            size / 1e6 / wall)
            guest, wall, text = _timed(vm, f"bankctl stage {url} 2>/dev/null")
            res[f"bankctl stage {proto} MB/s (instruction clock / wall)"] = (size / 1e6 / guest, size / 1e6 / wall)
            res[f"bankctl stage {proto} fetched"] = re.search(r"fetched: (.*)", text).group(1)  # type: ignore[union-attr]
            displace()
        for gap in GAPS:
            url = plain.url("delta.bank", "10.0.2.2")
            guest, wall, text = _timed(vm, f"bankctl stage --gap {gap} {url} 2>/dev/null")
            res[f"delta gap={gap >> 10} KiB: s (instruction clock / wall)"] = (guest, wall)
            res[f"delta gap={gap >> 10} KiB: fetched"] = re.search(r"fetched: (.*)", text).group(1)  # type: ignore[union-attr]
            displace()
        guest, wall, text = _timed(vm, f"bankctl stage --ca {ca_file} {tls.url('nothing-here.bank', '10.0.2.2')} "
                                       f"2>&1 | tail -1; true")
        res["https to a 404, TLS piece loaded (instruction clock / wall)"] = (guest, wall)
        guest, wall, text = _timed(vm, f"bankctl stage {plain.url('nothing-here.bank', '10.0.2.2')} 2>&1 | tail -1; "
                                       f"true")
        res["http to a 404 (instruction clock / wall)"] = (guest, wall)
    return res


class SlowLink:
    """A loopback link with a round trip of `rtt` seconds per request and `rate` bytes/s, in front of a
    server at `upstream`: one thread per connection, requests forwarded one at a time (kept alive)."""

    def __init__(self, upstream: int, rtt: float, rate: float) -> None:
        import socket
        import socketserver
        import threading

        link = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                link._serve(self.request)

        self.upstream, self.rtt, self.rate = upstream, rtt, rate
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._socket, self._threading = socket, threading

    def __enter__(self) -> SlowLink:
        self._threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, client: Any) -> None:
        up = self._socket.create_connection(("127.0.0.1", self.upstream))
        try:
            while True:
                request = client.recv(65536)  # a GET fits one read
                if not request:
                    return
                up.sendall(request)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += up.recv(65536)
                end = head.index(b"\r\n\r\n") + 4
                length = int(re.search(rb"(?i)content-length: *(\d+)", head[:end]).group(1))  # type: ignore[union-attr]
                body, head = head[end:], head[:end]
                time.sleep(self.rtt)
                client.sendall(head)
                while True:
                    if body:
                        client.sendall(body)
                        time.sleep(len(body) / self.rate)
                        length -= len(body)
                    if length <= 0:
                        break
                    body = up.recv(min(16384, length))
        except OSError:
            return
        finally:
            up.close()
            client.close()


def gap_on_links(out: Path, key: Path) -> dict[str, object]:
    """The one-package delta on the build host through slow links (a round trip per request, a rate), at
    each gap: where coalescing pays."""
    from builder.lab.serve import Server
    from overlay_layout.net.download import stage_url
    from overlay_layout.net.transport import Settings
    from overlay_layout.state import Banks
    from overlay_layout.trust import Policy, key_id, read_public_key

    pub = read_public_key(str(key.with_suffix(".pub")))
    policy = Policy({key_id(pub): pub}, allow_unsigned=False, allow_downgrade=True)
    www = out / "host-www"
    www.mkdir(exist_ok=True)
    shutil.copyfile(out / "app-1.0.0.bank", www / "base.bank")
    shutil.copyfile(out / "www" / "delta.bank", www / "delta.bank")
    res: dict[str, object] = {}
    settings = Settings(environ={})
    with Server(www) as srv:
        base = out / "host-banks"
        shutil.rmtree(base, ignore_errors=True)
        (base / "overlay").mkdir(parents=True)
        banks = Banks(str(base))
        m, _ = stage_url(banks, srv.url("base.bank"), policy, "9.9.9", machine="aarch64", settings=settings)
        banks.mark_good(m["id"])
        for rtt, rate in ((0.02, 10e6), (0.05, 2e6), (0.15, 0.5e6)):
            with SlowLink(srv.port, rtt, rate) as link:
                for gap in (*GAPS, 1 << 20):
                    trial = out / "host-trial"
                    shutil.rmtree(trial, ignore_errors=True)
                    shutil.copytree(base, trial, symlinks=True)
                    start = time.monotonic()
                    _, st = stage_url(Banks(str(trial)), f"http://127.0.0.1:{link.port}/delta.bank", policy, "9.9.9",
                                      machine="aarch64", settings=settings, gap=gap)
                    res[f"link {rtt * 1000:.0f} ms, {rate / 1e6:g} MB/s, gap {gap >> 10} KiB: s, requests, MB"] = (
                        time.monotonic() - start, float(st.requests), st.received / 1e6)
    return res


def print_netbench(res: dict[str, object]) -> None:
    for k, v in res.items():
        if isinstance(v, tuple):
            print(f"  {k}: {' / '.join(f'{x:.2f}' for x in v)}")
        else:
            print(f"  {k}: {v}")
