"""`bankboot disk` writes a sparse image and a .bmap: `bmaptool copy` (Debian's bmap-tools) writes only
the mapped blocks, and a card that held something else before still comes out with clean filesystems."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from builder.disk import bmap_path, build_disk
from builder.image import build_image
from builder.lab.samplerootfs import build_sample_rootfs


def extract(disk: Path, part: dict, out: Path) -> Path:
    with open(disk, "rb") as src, open(out, "wb") as dst:
        src.seek(part["start"] * 512)
        dst.write(src.read(part["size"] * 512))
    return out


def test_bmaptool_copy_writes_a_disk_that_checks_clean_over_old_data(aarch64, built_initramfs, signing_key,
                                                                    tmp_path: Path) -> None:
    board, _, _ = aarch64
    rootfs = build_sample_rootfs(board.arch, tmp_path / "rootfs", version="5.0.0")
    build_image(rootfs, "5.0.0", tmp_path / "app.bank", sign_key=signing_key.private)
    disk = tmp_path / "disk.img"
    size = 256 << 20
    build_disk(board, tmp_path / "app.bank", disk, size, built_initramfs(board))
    bmap = bmap_path(disk)
    assert bmap.name == "disk.img.bmap"
    text = bmap.read_text()
    fields = {k: int(v) for k, v in re.findall(r"<(ImageSize|BlockSize|BlocksCount|MappedBlocksCount)> *(\d+)", text)}
    assert fields["ImageSize"] == size and fields["BlocksCount"] * fields["BlockSize"] == size
    assert 0 < fields["MappedBlocksCount"] < fields["BlocksCount"] // 2, fields  # sparse: most of it is free
    out = subprocess.run(["bmaptool", "copy", str(disk), str(tmp_path / "copy.img")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr  # bmaptool checks every mapped range's sha256 as it copies
    assert f"discovered bmap file '{bmap}'" in out.stderr  # found beside the image, as Yocto users expect
    # Onto a device, bmaptool writes the mapped ranges and nothing else (onto a file it writes holes): a
    # card that held something else, every byte 0xa5, gets exactly that here.
    card = tmp_path / "card.img"
    with open(card, "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(b"\xa5" * (1 << 20))
    with open(disk, "rb") as src, open(card, "r+b") as dst:
        for first, last in re.findall(r"<Range[^>]*> *(\d+)(?:-(\d+))? *</Range>", text):
            start, count = int(first), int(last or first) - int(first) + 1
            src.seek(start * fields["BlockSize"])
            dst.seek(start * fields["BlockSize"])
            dst.write(src.read(count * fields["BlockSize"]))
    parts = json.loads(subprocess.run(["sfdisk", "-J", str(card)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]["partitions"]
    assert [p["type"] for p in parts] == ["c", "83", "83"]
    boot = extract(card, parts[0], tmp_path / "boot.vfat")
    assert subprocess.run(["fsck.vfat", "-n", str(boot)], capture_output=True).returncode == 0
    for n, label in ((1, "bankboot-banks"), (2, "bankboot-data")):
        fs = extract(card, parts[n], tmp_path / f"p{n + 1}.ext4")
        check = subprocess.run(["e2fsck", "-fn", str(fs)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        assert label in subprocess.run(["dumpe2fs", "-h", str(fs)], capture_output=True, text=True).stdout
    banks = tmp_path / "p2.ext4"
    # The journal was zeroed by mke2fs (lazy_journal_init=0): on the card it must be, not the old bytes left
    # in blocks the map skipped (an old journal of the same filesystem UUID could be replayed after a crash).
    block = int(re.search(r"Block size: +(\d+)", subprocess.run(["dumpe2fs", "-h", str(banks)], capture_output=True,
                                                             text=True, check=True).stdout).group(1))
    journal = subprocess.run(["debugfs", "-R", "stat <8>", str(banks)], capture_output=True, text=True).stdout
    extents = re.findall(r"\(\d+(?:-\d+)?\):(\d+)(?:-(\d+))?", journal.split("EXTENTS:")[1])
    assert extents
    with open(banks, "rb") as f:
        for first, last in extents:
            f.seek(int(first) * block)
            data = f.read((int(last or first) - int(first) + 1) * block)
            assert b"\xa5" * block not in data, f"journal blocks {first}-{last} hold the card's old bytes"
    listing = subprocess.run(["debugfs", "-R", "ls -l overlay", str(banks)], capture_output=True, text=True).stdout
    assert "current" in listing
