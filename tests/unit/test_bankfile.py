"""The one reader of the bank-file format (overlay_layout.bankfile) and the copy-and-hash loop."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from overlay_layout import durable
from overlay_layout.bankfile import BankFile, BankFileError
from overlay_layout.hashing import ShortRead, copy_hashed, hash_file
from tests.banks import make_bank


def test_reads_members_and_extracts_checked(tmp_path: Path) -> None:
    bank = tmp_path / "a.bank"
    make_bank(bank, "1.2.0", b"x" * 70000)
    with BankFile(str(bank)) as b:
        assert [m.name for m in b.payload()] == ["rootfs.squashfs"]
        sq = b.payload()[0]
        assert bank.read_bytes()[sq.offset:sq.offset + 4] == b"hsqs" and sq.size == b.manifest["size"]
        assert b.verify(sq)
        b.extract(sq, str(tmp_path / "out"))
    assert hash_file(str(tmp_path / "out"))[1] == b.manifest["sha256"]


def _rewrite(bank: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(bank, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _members(bank: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(bank) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


@pytest.mark.parametrize("damage, message", [
    ("order", "in that order; found 'rootfs.squashfs' after nothing"),
    ("extra", "found 'notes.txt' after manifest.json, rootfs.squashfs"),
    ("truncate", "is truncated: rootfs.squashfs needs"),
    ("not-tar", "not a bank file"),
    ("header", "damaged archive header"),
    ("size", "squashfs is 9 bytes, the manifest says"),
])
def test_refuses_what_is_not_a_bank_file(tmp_path: Path, damage: str, message: str) -> None:
    bank = tmp_path / "a.bank"
    make_bank(bank, "1.2.0", b"x" * 70000)
    members = _members(bank)
    if damage == "order":
        _rewrite(bank, members[::-1])
    elif damage == "extra":
        _rewrite(bank, [*members, ("notes.txt", b"hi")])
    elif damage == "truncate":
        bank.write_bytes(bank.read_bytes()[:40000])
    elif damage == "not-tar":
        bank.write_bytes(b"hsqs" + bytes(5000))
    elif damage == "header":
        data = bytearray(bank.read_bytes())
        data[10] ^= 1  # the name, so the checksum no longer matches
        bank.write_bytes(bytes(data))
    elif damage == "size":
        _rewrite(bank, [members[0], ("rootfs.squashfs", b"hsqs12345")])
    with pytest.raises(BankFileError, match=message):
        BankFile(str(bank))


def test_extract_of_a_changed_squashfs_leaves_nothing(tmp_path: Path) -> None:
    bank = tmp_path / "a.bank"
    make_bank(bank, "1.2.0", b"x" * 70000)
    data = bytearray(bank.read_bytes())
    data[3000] ^= 1
    bank.write_bytes(bytes(data))
    with BankFile(str(bank)) as b:
        assert not b.verify(b.payload()[0])
        with pytest.raises(BankFileError, match="does not match the signed manifest"):
            b.extract(b.payload()[0], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_copy_hashed_never_overwrites_and_removes_a_cut_copy(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(9 << 20))
    fd = os.open(src, os.O_RDONLY)
    try:
        (tmp_path / "exists").write_bytes(b"keep")
        with pytest.raises(FileExistsError):
            copy_hashed(fd, 0, None, str(tmp_path / "exists"))
        assert (tmp_path / "exists").read_bytes() == b"keep"
        with pytest.raises(ShortRead, match="ends after"):
            copy_hashed(fd, 0, 10 << 20, str(tmp_path / "short"))
        assert not (tmp_path / "short").exists()
        calls: list[str] = []

        def cut(what: str) -> None:
            calls.append(what)
            if len(calls) == 3:
                raise KeyboardInterrupt

        durable.before_write = cut
        try:
            with pytest.raises(KeyboardInterrupt):
                copy_hashed(fd, 0, None, str(tmp_path / "cut"))
        finally:
            durable.before_write = None
        assert not (tmp_path / "cut").exists()
        assert copy_hashed(fd, 1 << 20, 5, str(tmp_path / "five"))[0] == 5
    finally:
        os.close(fd)


def test_gc_removes_unfinished_downloads_and_boot_leaves_them(tmp_path: Path) -> None:
    from overlay_layout.state import Banks
    from tests.banks import install_first_image

    install_first_image(tmp_path)
    banks = Banks(str(tmp_path))
    partial = tmp_path / "overlay" / ".download-2.0.0-abc"
    partial.mkdir()
    (partial / "rootfs.squashfs.part").write_bytes(b"x" * 100)
    assert banks.remove_staging_leftovers() == [] and partial.is_dir()  # what every boot runs: kept
    assert ".download-2.0.0-abc" in banks.gc("1.0.0-base") and not partial.exists()
    assert banks.layout.images() == ["1.0.0-base"]
