"""Reading filesystem labels and UUIDs the way the init does for root=LABEL=/UUID=, on real images."""

from __future__ import annotations

from pathlib import Path

from initfs.blockdev import fs_label_uuid


def test_unknown_content_has_no_label(tmp_path: Path) -> None:
    img = tmp_path / "z.img"
    img.write_bytes(b"\0" * 4096)
    assert fs_label_uuid(str(img)) == (None, None)
