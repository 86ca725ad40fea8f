"""The channel document: what a channel on static storage offers. `bankboot publish` writes it beside the
bank files (builder/publish.py), `bankctl poll` reads it (initfs/poll.py); this module owns its format.

One small JSON object, signed with the release key(s) by the same ed25519 code and in the same form as an
image's manifest (trust.py: the canonical JSON without its signature fields is what is signed; a device
checks it against the keys in force, with their threshold, as it checks images):

    format       1
    kind         "bankboot-channel"
    channel      the channel's name (stable, beta, ...): the document's file is <channel>.json
    version      the release's version (semantic)
    image        its image id
    arch         its Debian architecture
    boards       the board names it is for (initramfs.conf's board= on the device)
    bank         the bank file's URL, relative to the document's (banks/<image>.bank), or absolute
    size         the bank file's size in bytes
    manifest     sha256 of the bank's manifest.json as stored in it: the document names one exact bank
    min_version  optional: the lowest running version this release may replace
    published    when it was signed, and
    expires      when devices stop taking it (UTC, 2026-12-01T10:00:00Z): a mirror that keeps serving an old
                 document cannot hold a fleet on an old release past this

A device refuses a document that is unsigned (unless its initramfs accepts unsigned images), signed by a
key it does not trust, expired, for another board, older than one it already saw at the same URL, or not
one at all (not JSON, HTML, too big); and a bank whose manifest or size disagrees with the document."""

from __future__ import annotations

from overlay_layout import hashing, jsontext
from overlay_layout.contract import UnknownArch, arch_named, is_name
from overlay_layout.errors import BankbootError
from overlay_layout.layout import LayoutError, check_id
from overlay_layout.manifest import dump_manifest
from overlay_layout.trust import KeySet, TrustError, parse_version, sign_manifest, verify_manifest
from overlay_layout.utctime import format_utc, parse_utc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

FORMAT = 1
KIND = "bankboot-channel"
MAX_BYTES = 64 << 10  # a channel document is well under 1 KB; anything this big is not one
MAX_BOARDS = 64
SUFFIX = ".json"
BANKS_DIR = "banks"  # where publish puts bank files, beside the documents
REQUIRED = {"format": int, "kind": str, "channel": str, "version": str, "image": str, "arch": str, "boards": list,
            "bank": str, "size": int, "manifest": str, "published": str, "expires": str}
OPTIONAL = {"min_version": str}
SIGNATURE_FIELDS = ("key", "signature", "signatures")  # trust.py's, in either of its forms


class ChannelError(BankbootError):
    """A channel document this device does not take; the message names the document and why."""

    transient = False


def document_name(channel: str) -> str:
    return channel + SUFFIX


def bank_path(image: str) -> str:
    """Where publish puts an image's bank file, relative to the channel documents."""
    return f"{BANKS_DIR}/{image}.bank"


def manifest_digest(raw: bytes) -> str:
    return str(hashing.sha256(raw).hexdigest())


class Channel:
    """A parsed, signature-checked channel document (`doc`: its fields; `signed_by`: who signed it)."""

    def __init__(self, doc: dict[str, Any], signed_by: str, raw: bytes) -> None:
        self.doc, self.signed_by, self.raw = doc, signed_by, raw
        self.channel: str = doc["channel"]
        self.version: str = doc["version"]
        self.image: str = doc["image"]
        self.arch: str = doc["arch"]
        self.boards: list[str] = doc["boards"]
        self.bank: str = doc["bank"]
        self.size: int = doc["size"]
        self.manifest: str = doc["manifest"]
        self.min_version: str | None = doc.get("min_version")
        self.published: int = parse_utc(doc["published"]) or 0
        self.expires: int = parse_utc(doc["expires"]) or 0

    def describe(self) -> str:
        return (f"channel {self.channel}: {self.version} (image {self.image}, {self.size / 1e6:.1f} MB bank), "
                f"published {format_utc(self.published)}, expires {format_utc(self.expires)}, signed by "
                f"{self.signed_by}")


def make_document(fields: Mapping[str, object], seed: bytes | list[bytes]) -> bytes:
    """The signed document's bytes, for publish: the fields checked as a device checks them, then signed
    by each key (a fleet whose keys need several signatures, trust.py's threshold)."""
    doc: dict[str, object] = {"format": FORMAT, "kind": KIND,
                              **{k: v for k, v in fields.items() if k not in SIGNATURE_FIELDS}}
    check_fields(doc, "the channel document")
    try:
        for one in [seed] if isinstance(seed, bytes) else seed:
            doc = sign_manifest(doc, one)
    except TrustError as e:
        raise ChannelError(str(e)) from e
    return dump_manifest(doc)


def parse_document(raw: bytes, where: str, keys: KeySet | dict[str, bytes], allow_unsigned: bool) -> Channel:
    """The channel document in `raw` (fetched from `where`): shape, then signature, then fields. Device-
    specific checks (expiry, board, versions) are check_for's."""
    what = f"the channel document {where}"
    if len(raw) > MAX_BYTES:
        raise ChannelError(f"{what} is {len(raw)} bytes; a channel document is at most {MAX_BYTES >> 10} KiB: this "
                           f"is not one")
    head = raw[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        raise ChannelError(f"{where} is an HTML page, not a channel document (a login or error page? a captive "
                           f"portal, or a wrong URL?)")
    try:
        doc = jsontext.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ChannelError(f"{where} is not a channel document: not JSON ({str(e)[:80]})") from e
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ChannelError(f"{where} is not a bankboot channel document (no \"kind\": \"{KIND}\"; a manifest, or "
                           f"another program's file?)")
    if doc.get("format") != FORMAT:
        raise ChannelError(f"{what} has format {doc.get('format')!r}; this bankctl reads format {FORMAT} (a newer "
                           f"bankboot published it: update this device's bankboot first)")
    try:
        who = verify_manifest(doc, keys, allow_unsigned, what=what)
    except TrustError as e:
        raise ChannelError(str(e)) from e
    check_fields(doc, what)
    return Channel(doc, who, raw)


def check_fields(doc: Mapping[str, Any], what: str) -> None:
    """Every field's type and syntax; ChannelError names the first one at fault."""
    for key, kind in REQUIRED.items():
        if not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
            raise ChannelError(f"{what}: {key!r} must be a{'n' if kind in (int, list) else ''} "
                               f"{ {int: 'integer', str: 'string', list: 'list'}[kind]}")
    for key, kind in OPTIONAL.items():
        if key in doc and not isinstance(doc[key], kind):
            raise ChannelError(f"{what}: {key!r} must be a string")
    unknown = set(doc) - set(REQUIRED) - set(OPTIONAL) - set(SIGNATURE_FIELDS)
    if unknown:
        raise ChannelError(f"{what}: unknown field(s) {', '.join(sorted(unknown))} (a newer format?)")
    if not is_name(doc["channel"], 64, alnum_first=True):
        raise ChannelError(f"{what}: channel {doc['channel']!r} is not a name (letters, digits, . _ + -)")
    try:
        check_id(doc["image"])
        for key in ("version", "min_version"):
            if key in doc:
                parse_version(doc[key])
        arch_named(doc["arch"])
    except (LayoutError, TrustError, UnknownArch) as e:
        raise ChannelError(f"{what}: {e}") from e
    boards = doc["boards"]
    if not 0 < len(boards) <= MAX_BOARDS or not all(isinstance(b, str) and is_name(b, 64) for b in boards):
        raise ChannelError(f"{what}: 'boards' must list 1 to {MAX_BOARDS} board names")
    bank = doc["bank"]
    if not 0 < len(bank) <= 2048 or not bank.isascii() or any(c <= " " or c == "\x7f" for c in bank):
        raise ChannelError(f"{what}: 'bank' must be a URL (relative to the document's, or absolute)")
    if doc["size"] <= 0:
        raise ChannelError(f"{what}: 'size' must be positive")
    if len(doc["manifest"]) != 64 or any(c not in "0123456789abcdef" for c in doc["manifest"]):
        raise ChannelError(f"{what}: 'manifest' must be a sha256 (64 lowercase hex digits)")
    published, expires = parse_utc(doc["published"]), parse_utc(doc["expires"])
    if published is None or expires is None:
        raise ChannelError(f"{what}: 'published' and 'expires' must be UTC times such as 2026-12-01T10:00:00Z")
    if expires <= published:
        raise ChannelError(f"{what}: it expires ({doc['expires']}) before it was published ({doc['published']})")


def check_for(ch: Channel, where: str, board: str, now: float, seen: int | None = None) -> None:
    """What this device takes: `board` among the document's, not expired at `now` (the device's clock, or the
    newest publish time it has seen when that is later: a board without a clock starts in 1970), not older
    than the document `seen` (its publish time) at the same URL."""
    what = f"the channel document {where}"
    if board not in ch.boards:
        raise ChannelError(f"{what} is for board{'s' if len(ch.boards) > 1 else ''} {', '.join(ch.boards)}; this "
                           f"device is {board or 'of no known board (its initramfs.conf names none)'}")
    if ch.expires <= now:
        raise ChannelError(f"{what} expired at {format_utc(ch.expires)} (this device's clock: {format_utc(now)}): "
                           f"the publisher must sign it again (bankboot publish renews it); a mirror that serves "
                           f"an old document cannot keep this device on an old release")
    if seen is not None and ch.published < seen:
        raise ChannelError(f"{what} was published at {format_utc(ch.published)}, before the one this device took "
                           f"from the same URL ({format_utc(seen)}): an old document served again (a stale mirror "
                           f"or a replay); refused")
