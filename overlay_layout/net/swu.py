"""The .swu container a bank travels in to a hawkBit-DDI server (`bankboot publish BANK --format swu OUT`,
`bankctl poll --hawkbit`); this module owns its layout.

A rollout server built for SWUpdate (goosebit, hawkBit with SWUpdate's suricatta) takes an artifact it can
index: a cpio archive in the "newc" (or "crc") format whose first member is `sw-description`, the libconfig
text SWUpdate reads, from which the server takes the release's version (`software.version`) and the
hardware it is for (`software.<board>.hardware-compatibility`). The bank goes inside, unchanged, so a device
reads it by byte range at its offset in the artifact, exactly as it reads a bank file on a web server: the
manifest first, then only the chunks it lacks. The members, in this order:

    sw-description   for the server (and SWUpdate): version, boards, the bank as an image of type
                     "bankboot" (no SWUpdate handler has that name: SWUpdate refuses the file instead of
                     writing it somewhere)
    bankboot.json    for bankctl: {"kind": "bankboot-swu", "format": 1, "image", "version", "arch",
                     "boards", "size", "manifest"} (manifest: sha256 of the bank's manifest.json as stored);
                     a plain JSON file so the device never parses libconfig
    <image>.bank     the bank file, byte for byte (its signed manifest is what the device trusts)

newc stores sizes in 8 hex digits: a bank of 4 GiB or more does not fit (publish refuses it)."""

from __future__ import annotations

from overlay_layout import jsontext
from overlay_layout.errors import BankbootError

KIND = "bankboot-swu"
FORMAT = 1
SW_DESCRIPTION = "sw-description"
INFO = "bankboot.json"
BANK_SUFFIX = ".bank"
HEAD = 110  # a newc header
MAGICS = (b"070701", b"070702")
MAX_INFO = 16 << 10
MAX_FILE = (1 << 32) - 1


class SwuError(BankbootError):
    """An artifact that is not a bankboot .swu (or a damaged one); the message names it and why."""

    transient = False


class Entry:
    """One member of the archive: name, size, where its data starts."""

    __slots__ = ("name", "offset", "size")

    def __init__(self, name: str, offset: int, size: int) -> None:
        self.name, self.offset, self.size = name, offset, size


def _align(n: int) -> int:
    return n + (4 - n % 4) % 4


def header_at(raw: bytes, pos: int, where: str) -> tuple[Entry, int]:
    """The entry whose header starts at `pos` of `raw`: (entry, offset of the next header)."""
    head = raw[pos:pos + HEAD]
    if len(head) < HEAD:
        raise SwuError(f"{where}: the archive ends inside a cpio header at byte {pos}")
    if head[:6] not in MAGICS:
        what = "an SWUpdate .swu (a newc cpio archive)" if pos == 0 else "a cpio header"
        raise SwuError(f"{where}: not {what} at byte {pos} (it starts {head[:8]!r})")
    try:
        fields = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
    except ValueError:
        raise SwuError(f"{where}: a damaged cpio header at byte {pos}") from None
    size, namesize = fields[6], fields[11]
    name_end = pos + HEAD + namesize
    if namesize < 1 or namesize > 4096 or name_end > len(raw):
        raise SwuError(f"{where}: a cpio header at byte {pos} names no readable file")
    name = raw[pos + HEAD:name_end - 1].decode("utf-8", "replace")
    start = _align(name_end)
    return Entry(name, start, size), _align(start + size)


def parse_head(raw: bytes, where: str) -> tuple[dict[str, object], Entry]:
    """From the artifact's first bytes (at least up to the bank's header): bankboot.json's fields and the bank
    member. SwuError for anything else: another program's .swu, a RAUC bundle, an HTML page."""
    if raw[:4] == b"hsqs":
        raise SwuError(f"{where}: a RAUC bundle (squashfs), not a bankboot .swu (bankboot publish --format swu)")
    if raw[:512].lstrip().lower().startswith((b"<!doctype html", b"<html")):
        raise SwuError(f"{where}: an HTML page, not an artifact (a login or error page?)")
    first, pos = header_at(raw, 0, where)
    if first.name != SW_DESCRIPTION:
        raise SwuError(f"{where}: not an SWUpdate .swu (its first member is {first.name!r}, not sw-description)")
    second, pos = header_at(raw, pos, where)
    if second.name != INFO:
        raise SwuError(f"{where}: an SWUpdate .swu, but not one bankboot made (no {INFO} after sw-description, "
                       f"{second.name!r} instead): its images are for SWUpdate's handlers, not a bank")
    if second.size > MAX_INFO or second.offset + second.size > len(raw):
        raise SwuError(f"{where}: {INFO} is {second.size} bytes; it is at most {MAX_INFO >> 10} KiB")
    try:
        info = jsontext.loads(raw[second.offset:second.offset + second.size].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        info = None
    if not isinstance(info, dict) or info.get("kind") != KIND:
        raise SwuError(f"{where}: {INFO} is not bankboot's (no \"kind\": \"{KIND}\")")
    if info.get("format") != FORMAT:
        raise SwuError(f"{where}: {INFO} has format {info.get('format')!r}; this bankctl reads format {FORMAT}")
    for key, kind in (("image", str), ("version", str), ("arch", str), ("boards", list), ("size", int),
                      ("manifest", str)):
        if not isinstance(info.get(key), kind):
            raise SwuError(f"{where}: {INFO}: {key!r} is missing or of the wrong type")
    bank, _ = header_at(raw, pos, where)
    if bank.name != f"{info['image']}{BANK_SUFFIX}" or bank.size != info["size"]:
        raise SwuError(f"{where}: the member after {INFO} is {bank.name!r} ({bank.size} bytes), not the bank it "
                       f"names ({info['image']}{BANK_SUFFIX}, {info['size']} bytes)")
    return info, bank


def head_needed(raw: bytes) -> int:
    """How many bytes parse_head needs, once `raw` holds the first two headers (0 when they are not all in it)."""
    try:
        _, pos = header_at(raw, 0, "")
        _, pos = header_at(raw, pos, "")
    except SwuError:
        return 0
    return pos + HEAD + 4096
