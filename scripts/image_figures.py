"""Issue 23's figures (docs/images.md, "Memory and time"): time and peak memory of `bankboot image` for a
1 GB root filesystem from each source kind, and the delta between two builds of the same image a day apart.

    .venv/bin/python scripts/image_figures.py [WORKDIR]     (about 15 minutes; 8 GB of disk in WORKDIR)

The rootfs: the tests' Debian 12 arm64 minbase tarball (tests/debian.py, mmdebstrap) as the base layer and
a second layer of 0.8 GB of data files (half incompressible, half text-like), as a Containerfile's
`COPY`/`RUN` would add. Each source kind is built in a process of its own: its peak RSS is bankboot's,
the children's the largest of tar2sqfs, skopeo and the decompressors. "A day apart": the same two layers
built again with every file of the upper layer a day newer, a build log and /etc/build-date that name the
day, and the image's creation time a day later (bankboot clamps mtimes to it)."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DAY = 86400
T0 = 1709294400  # tests/images.py's CREATED
DATA_BYTES = 800 << 20
FILE_BYTES = 4 << 20


def data_layer(out: Path, mtime: int, day: int) -> Path:
    """0.8 GB of files under /srv/data (the same bytes whatever the day), plus a log naming the day."""
    rng = random.Random(23)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(5000)]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, mode
            import io

            tar.addfile(info, io.BytesIO(data))

        for d in ("srv", "srv/data", "var", "var/log", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tar.addfile(info)
        for i in range(DATA_BYTES // FILE_BYTES):
            if i % 2:
                data = rng.randbytes(FILE_BYTES)
            else:
                data = b" ".join(rng.choice(words) for _ in range(FILE_BYTES // 6))[:FILE_BYTES]
            add(f"srv/data/file{i:03d}", data)
        stamp = time.strftime("%Y-%m-%d", time.gmtime(mtime))
        add("etc/build-date", f"{stamp}\n".encode())
        add("var/log/build.log", "".join(f"{stamp} 12:00:{s:02d} step {s} done\n" for s in range(60)).encode())
    return out


def oci(layout: Path, layers: list[Path], created: int) -> str:
    from tests.images import run

    run("umoci", "init", "--layout", str(layout))
    ref = f"{layout}:img"
    run("umoci", "new", "--image", ref)
    for layer in layers:
        run("umoci", "raw", "add-layer", "--no-history", "--image", ref, str(layer))
    run("umoci", "config", "--no-history", "--image", ref, "--os", "linux", "--architecture", "arm64", "--created",
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)))
    return f"oci:{ref}"


def measure(source: str, out: str) -> None:
    """One `bankboot image`, in this process: print its time and peak RSS (own, largest child)."""
    from builder.image import build_image

    start = time.monotonic()
    build_image(None, "1.0.0", Path(out), source=source, say=lambda _line: None)
    took = time.monotonic() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"time": round(took, 1), "rss_mb": round(own / 1024), "child_rss_mb": round(kids / 1024)}))


def run_measure(source: str, out: Path, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--measure", source, str(out)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode:
        raise RuntimeError(f"bankboot image --from {source} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(work: Path) -> None:
    from builder.delta import delta
    from tests.debian import debian_rootfs
    from tests.images import save_as
    from tests.registry import Registry

    os.environ.pop("SOURCE_DATE_EPOCH", None)  # the image's creation time clamps mtimes
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = debian_rootfs("arm64")
    day1 = data_layer(work / "data1.tar", T0, 1)
    ref = oci(work / "oci1", [base, day1], T0)
    tree = work / "tree"
    tree.mkdir()
    for layer in (base, day1):
        subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xf",
                        str(layer)], check=True)
    size = int(subprocess.run(["du", "-sb", str(tree)], capture_output=True, text=True, check=True).stdout.split()[0])
    subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-cf",
                    str(work / "rootfs.tar"), "."], check=True)
    subprocess.run(["zstd", "-q", "-T0", "-3", "-k", str(work / "rootfs.tar")], check=True)
    docker = save_as(ref, "docker-archive", work / "docker.tar")
    results: dict[str, dict] = {}
    epoch = {"SOURCE_DATE_EPOCH": str(T0)}  # a directory and a tarball have no creation time of their own
    with Registry(work / "registry") as reg:
        pushed = reg.push(ref, "figures/img:1")
        os.environ.update(reg.env())
        for kind, source, env in [("directory", str(tree), epoch), ("tarball (.tar)", str(work / "rootfs.tar"), epoch),
                                  ("tarball (.tar.zst)", str(work / "rootfs.tar.zst"), epoch),
                                  ("OCI layout", ref, None), ("docker-archive", str(docker), None),
                                  ("registry", pushed, None)]:
            out = work / f"{kind.split()[0]}-{len(results)}.bank"
            results[kind] = run_measure(source, out, env)
            results[kind]["bank_mb"] = round(out.stat().st_size / 1e6)
            print(kind, results[kind], flush=True)
            if kind != "OCI layout":
                out.unlink()
    shutil.rmtree(tree)
    # The same image built a day later.
    day2 = data_layer(work / "data2.tar", T0 + DAY, 2)
    ref2 = oci(work / "oci2", [base, day2], T0 + DAY)
    run_measure(ref2, work / "day2.bank")
    need, total = delta([work / "OCI-3.bank"], work / "day2.bank")
    print(json.dumps({"rootfs_bytes": size, "results": results,
                      "delta": {"fetched": need, "bank": total, "percent": round(100 * need / total, 3)}}, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        measure(sys.argv[2], sys.argv[3])
    else:
        main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bankboot-image-figures").resolve())
