"""Reading filesystem labels and UUIDs from images made by the host's mkfs tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

from initfs.blockdev import fs_label_uuid


def test_ext4_label_and_uuid(tmp_path: Path) -> None:
    img = tmp_path / "e.img"
    img.write_bytes(b"")
    subprocess.run(["truncate", "-s", "8M", str(img)], check=True)
    uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "bankboot-banks", "-U", uuid, str(img)], check=True)
    assert fs_label_uuid(str(img)) == ("bankboot-banks", uuid)


def test_fat_label_and_serial(tmp_path: Path) -> None:
    img = tmp_path / "f.img"
    subprocess.run(["mkfs.vfat", "-C", "-n", "BOOT", "-i", "1234abcd", str(img), "65536"], check=True,
                   capture_output=True)
    assert fs_label_uuid(str(img)) == ("BOOT", "1234ABCD")
