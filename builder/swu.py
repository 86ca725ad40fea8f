"""`bankboot publish BANK --format swu OUT`: the bank in a .swu container that a hawkBit-DDI server built for
SWUpdate (goosebit, hawkBit) indexes, for `bankctl poll --hawkbit` (the layout: overlay_layout/net/swu.py;
docs/hawkbit.md). Written reproducibly (fixed inode numbers, owner 0:0, mtime SOURCE_DATE_EPOCH or 0) to a
temp file that is fsynced and renamed into place: a cut publish leaves no half .swu under OUT's name."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from builder.cpio import TRAILER, source_date_epoch, write_entry
from builder.publish import PublishError, read_release, release_boards
from overlay_layout import durable
from overlay_layout.contract import is_name
from overlay_layout.net.channel import manifest_digest
from overlay_layout.net.swu import BANK_SUFFIX, FORMAT, INFO, KIND, MAX_FILE, SW_DESCRIPTION

DEFAULT_REVISION = "default"  # what goosebit reads for a device that names no hardware revision


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sw_description(manifest: dict, bank_name: str, bank_sha256: str, boards: list[str], revisions: list[str]) -> str:
    """SWUpdate's libconfig text: the version, each board's hardware revisions (a list, never a bare string:
    goosebit would read a string's characters as revisions), the bank as an image of type "bankboot"."""
    revs = ", ".join(_quote(r) for r in revisions)
    what = f"bankboot image {manifest['id']} ({manifest['arch']}), staged by bankctl poll --hawkbit"
    lines = ["software =", "{", f"\tversion = {_quote(manifest['version'])};",
             f"\tdescription = {_quote(what)};"]
    for board in boards:
        lines += [f"\t{board} = {{", f"\t\thardware-compatibility = [ {revs} ];", "\t\timages: (", "\t\t\t{",
                  f"\t\t\t\tfilename = {_quote(bank_name)};", '\t\t\t\ttype = "bankboot";',
                  f"\t\t\t\tsha256 = {_quote(bank_sha256)};", "\t\t\t}", "\t\t);", "\t};"]
    return "\n".join([*lines, "};", ""])


def write_swu(bank_file: Path, out: Path, boards: list[str], revisions: list[str] | None = None) -> list[str]:
    """Write the .swu; returns what was done, line by line. PublishError names what is at fault."""
    revisions = revisions or [DEFAULT_REVISION]
    for r in revisions:
        if not is_name(r, 64):
            raise PublishError(f"--hw-revision {r!r} is not a revision (letters, digits, . _ + -)")
    manifest, raw, digest, checked = read_release(bank_file)
    names = release_boards(boards, manifest, bank_file)
    if not names:
        raise PublishError("--board: name the board(s) this release is for (a board file's name or path)")
    size = bank_file.stat().st_size
    if size > MAX_FILE:
        raise PublishError(f"{bank_file} is {size / 2**30:.1f} GiB; a .swu (newc cpio) holds files below 4 GiB")
    if out.is_dir():
        raise PublishError(f"{out} is a directory; give the .swu file's path")
    bank_name = manifest["id"] + BANK_SUFFIX
    names = sorted(set(names))
    desc = sw_description(manifest, bank_name, digest, names, revisions).encode()
    info = {"kind": KIND, "format": FORMAT, "image": manifest["id"], "version": manifest["version"],
            "arch": manifest["arch"], "boards": names, "size": size, "manifest": manifest_digest(raw)}
    mtime = source_date_epoch()
    mode = stat.S_IFREG | 0o644
    durable.make_dirs(str(out.parent.resolve()))
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"

    def fill(fd: int) -> None:
        with os.fdopen(os.dup(fd), "wb") as f:
            write_entry(f, 1, SW_DESCRIPTION, mode, 1, mtime, desc)
            write_entry(f, 2, INFO, mode, 1, mtime, json.dumps(info, sort_keys=True).encode() + b"\n")
            name = bank_name.encode()
            head = b"070701" + b"".join(b"%08X" % v for v in (3, mode, 0, 0, 1, mtime, size, 0, 0, 0, 0,
                                                                len(name) + 1, 0)) + name + b"\0"
            f.write(head + b"\0" * ((4 - len(head) % 4) % 4))
            h = hashlib.sha256()
            with open(bank_file, "rb") as src:
                while block := src.read(4 << 20):
                    f.write(block)
                    h.update(block)
            f.write(b"\0" * ((4 - size % 4) % 4))
            write_entry(f, 0, TRAILER, 0, 1, 0, b"")
            f.flush()
            if h.hexdigest() != digest:
                raise PublishError(f"{bank_file} changed while it was being written into {out}: not published")

    try:
        durable.fill_file(str(tmp), fill)
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    durable.fsync_dir(str(out.parent.resolve()))
    made = f"{out}: {manifest['version']} (image {manifest['id']}) for {', '.join(names)} (hardware revision"
    return [*([checked] if checked else []), made +
            f"{'s' if len(revisions) > 1 else ''} {', '.join(revisions)}), {out.stat().st_size / 1e6:.1f} MB; upload "
            f"it to the rollout server (goosebit: PUT /api/v1/software), devices poll it with bankctl poll --hawkbit"]
