"""`bankboot publish BANK --channel NAME DEST`: put a release on static storage for devices to poll (`bankctl
poll URL/NAME.json`). DEST is a directory (served by any web server or CDN: `bankboot serve DEST`) or an S3
bucket, `s3://BUCKET/PREFIX` (boto3: AWS, or any S3-compatible store with --endpoint-url).

What goes there, in this order, so a publish cut at any point never leaves a channel document that points
at a file that is not all there:

1. `banks/<image id>.bank`, the bank file (its chunk index inside: devices fetch only the chunks they lack),
   written whole before it is visible: a temp file renamed into place, or an S3 object that exists only once
   its upload completed. Image ids are content-derived (VERSION-<sha256 prefix>), so a published bank is
   never replaced: a different file under the same name is refused, the same file is left as it is.
2. `<channel>.json`, the signed channel document (overlay_layout/net/channel.py), written last and replaced
   atomically (rename, or one PUT).

Publishing again is idempotent: an unchanged bank is not uploaded again, and an unchanged document is not
re-signed while more than half of its validity is left (a document that changes moves every device's
ETag). Run it again before `--expires` runs out to renew the document: devices refuse an expired one.
Leftovers of a cut publish (temp files, unfinished multipart uploads) are removed by the next one."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from builder.board import BoardError, load_board
from builder.errors import BuildError
from overlay_layout import durable, hashing
from overlay_layout.bankfile import BankFile
from overlay_layout.contract import is_name
from overlay_layout.layout import MANIFEST, LayoutError
from overlay_layout.net.channel import (
    ChannelError,
    bank_path,
    document_name,
    make_document,
    manifest_digest,
    parse_document,
)
from overlay_layout.trust import TrustError, key_id, parse_version, read_private_key
from overlay_layout.utctime import format_utc

DEFAULT_EXPIRES = 30 * 86400.0
PART = 8 << 20  # S3 multipart upload part size (and the threshold for one)
KILL_AT = "BANKBOOT_PUBLISH_KILL_AT"  # tests: SIGKILL this process at that step (a publish cut there)
BANK_CACHE = "public, max-age=31536000, immutable"  # a bank's name is its content
DOCUMENT_CACHE = "no-cache"  # a CDN asks the origin (If-None-Match) every time


class PublishError(BuildError):
    pass


def checkpoint(step: str) -> None:
    """Where a test cuts a publish: a real SIGKILL, so no clean-up code runs (steps: bank-partial,
    bank-written, document-partial)."""
    if os.environ.get(KILL_AT) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.document_url = ""


class DirTarget:
    """A directory for a web server: files 0644, every write temp -> fsync -> rename -> fsync dir."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def where(self, name: str) -> str:
        return str(self.root / name)

    def clean(self) -> list[str]:
        gone = []
        for d in (self.root, self.root / "banks"):
            for p in d.glob(".*.tmp-*") if d.is_dir() else []:
                p.unlink()
                gone.append(str(p))
        return gone

    def stat(self, name: str) -> tuple[int, str | None] | None:
        p = self.root / name
        if not p.is_file():
            return None
        return p.stat().st_size, hashing.hash_file(str(p))[1]

    def put_bank(self, name: str, src: Path, digest: str) -> None:
        dest = self.root / name
        durable.make_dirs(str(dest.parent))
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        size = src.stat().st_size

        def copy(fd: int) -> None:
            with open(src, "rb") as f:
                done = 0
                while block := f.read(4 << 20):
                    durable.write_all(fd, block)
                    done += len(block)
                    if done >= size // 2 > done - len(block):
                        os.fsync(fd)
                        checkpoint("bank-partial")

        durable.fill_file(str(tmp), copy)
        os.rename(tmp, dest)
        durable.fsync_dir(str(dest.parent))

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def put_document(self, name: str, data: bytes) -> None:
        """The new document, its modification time a whole second after the old one's: web servers make the
        ETag of a static file from its mtime in seconds and its size (nginx, lighttpd, Apache), so two
        documents of one length written in the same second would get one ETag and devices a 304 for the
        new one."""
        durable.make_dirs(str(self.root))
        dest = self.root / name
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        durable.fill_file(str(tmp), lambda fd: durable.write_all(fd, data))
        if dest.exists():
            stamp = max(int(time.time()), int(dest.stat().st_mtime) + 1)
            os.utime(tmp, (stamp, stamp))
        checkpoint("document-partial")
        os.rename(tmp, dest)
        durable.fsync_dir(str(self.root))

    def url(self, name: str) -> str:
        return f"http://HOST/{name} (serve {self.root}: bankboot serve {self.root})"


class S3Target:
    """An S3 bucket and key prefix, through boto3 (credentials and region as boto3 finds them)."""

    def __init__(self, dest: str, endpoint_url: str | None) -> None:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        bucket, _, prefix = dest.removeprefix("s3://").partition("/")
        if not bucket:
            raise PublishError(f"{dest}: no bucket (s3://BUCKET/PREFIX)")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        self.client = boto3.client("s3", endpoint_url=self.endpoint,
                                   config=Config(signature_version="s3v4", retries={"max_attempts": 3}))

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def where(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def clean(self) -> list[str]:
        """Abort the multipart uploads a cut publish left (they are never objects, but they take room)."""
        gone = []
        got = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.key("banks/"))
        for up in got.get("Uploads", []):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
            gone.append(f"an unfinished upload of {up['Key']}")
        return gone

    def stat(self, name: str) -> tuple[int, str | None] | None:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"]), head.get("Metadata", {}).get("sha256")

    def put_bank(self, name: str, src: Path, digest: str) -> None:
        key, size = self.key(name), src.stat().st_size
        extra = {"ContentType": "application/octet-stream", "CacheControl": BANK_CACHE, "Metadata": {"sha256": digest}}
        if size <= PART:
            checkpoint("bank-partial")
            self.client.put_object(Bucket=self.bucket, Key=key, Body=src.read_bytes(), **extra)
            return
        up = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)
        parts: list[dict[str, object]] = []
        try:
            with open(src, "rb") as f:
                while block := f.read(PART):
                    n = len(parts) + 1
                    got = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=up["UploadId"],
                                                  PartNumber=n, Body=block)
                    parts.append({"ETag": got["ETag"], "PartNumber": n})
                    if n == 1:
                        checkpoint("bank-partial")
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up["UploadId"],
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up["UploadId"])
            raise

    def read(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read())
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def put_document(self, name: str, data: bytes) -> None:
        checkpoint("document-partial")
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, ContentType="application/json",
                               CacheControl=DOCUMENT_CACHE)

    def url(self, name: str) -> str:
        if self.endpoint:
            return f"{self.endpoint.rstrip('/')}/{self.bucket}/{self.key(name)}"
        return f"https://{self.bucket}.s3.amazonaws.com/{self.key(name)}"


def open_target(dest: str, endpoint_url: str | None = None) -> DirTarget | S3Target:
    if dest.startswith("s3://"):
        return S3Target(dest, endpoint_url)
    if "://" in dest:
        raise PublishError(f"{dest}: publish to a directory or to s3://BUCKET/PREFIX")
    return DirTarget(Path(dest))


def read_release(bank_file: Path, device_key: Path | None = None) -> tuple[dict, bytes, str, str]:
    """(manifest, the manifest's bytes as stored, sha256 of the whole file, a line on how an encrypted bank
    was checked); every member checked against the manifest first, so nothing damaged reaches devices. An
    encrypted bank is checked by decrypting it with `device_key`; without one only its layout is (sizes,
    headers), and each device checks every chunk's tag and hash as it decrypts, before writing it."""
    checked = ""
    try:
        with BankFile(str(bank_file)) as bank:
            if bank.encrypted and device_key is not None:
                from builder.signing import SigningError, check_encrypted

                try:
                    check_encrypted(bank, device_key)
                except SigningError as e:
                    raise PublishError(f"{e}: not published") from None
                checked = f"{bank_file}: encrypted; decrypted with {device_key} and checked against its manifest"
            elif bank.encrypted:
                checked = (f"{bank_file}: encrypted; its files were not checked here (--device-key KEY checks them); "
                           f"devices check every chunk before they write it")
            for member in [] if bank.encrypted else bank.payload():
                if not bank.verify(member):
                    raise PublishError(f"{bank_file}: {member.name} does not match its manifest (damaged or changed "
                                       f"after signing): not published")
            m = bank.members[MANIFEST]
            raw = os.pread(bank.fd, m.size, m.offset)
            manifest = dict(bank.manifest)
    except LayoutError as e:
        raise PublishError(str(e)) from None
    return manifest, raw, hashing.hash_file(str(bank_file))[1], checked


def release_boards(boards: list[str], manifest: dict, bank_file: Path) -> list[str]:
    """The board names a release is for, each checked to load and to match the image's architecture."""
    names = []
    for b in boards:
        try:
            board = load_board(b)
        except (BoardError, OSError, ValueError) as e:
            raise PublishError(f"--board {b}: {e}") from None
        if board.arch.debian != manifest["arch"]:
            raise PublishError(f"--board {b} is an {board.arch.debian} board; {bank_file} is an {manifest['arch']} "
                               f"image")
        names.append(board.name)
    return names


def publish(bank_file: Path, channel: str, dest: str, key: Path | tuple[Path, ...], boards: list[str],
            min_version: str | None = None, expires: float = DEFAULT_EXPIRES, endpoint_url: str | None = None,
            now: float | None = None, device_key: Path | None = None) -> Report:
    """See the module's docstring. Returns what was done, line by line. `key`: the key(s) the document is
    signed with (each adds a signature: as many as the devices' threshold). `device_key`: an encrypted bank's
    recipient key, to check its files before they are published."""
    keys = (key,) if isinstance(key, Path) else key
    if not keys:
        raise PublishError("a channel document is signed: give --sign KEY.key")
    if not is_name(channel, 64, alnum_first=True):
        raise PublishError(f"--channel {channel!r} is not a name (letters, digits, . _ + -, at most 64)")
    if not boards:
        raise PublishError("--board: name the board(s) this release is for (a board file's name or path)")
    if expires < 3600:
        raise PublishError("--expires must be at least 1h (devices refuse a document once it has expired)")
    try:
        seeds = [read_private_key(str(k)) for k in keys]
        if min_version is not None:
            parse_version(min_version)
    except TrustError as e:
        raise PublishError(str(e)) from None
    manifest, raw, digest, checked = read_release(bank_file, device_key)
    names = release_boards(boards, manifest, bank_file)
    target, report = open_target(dest, endpoint_url), Report()
    for gone in target.clean():
        report.lines.append(f"removed {gone} (left by a cut publish)")
    if checked:
        report.lines.append(checked)
    image, size = manifest["id"], bank_file.stat().st_size
    name = bank_path(image)
    there = target.stat(name)
    if there is None:
        target.put_bank(name, bank_file, digest)
        checkpoint("bank-written")
        after = target.stat(name)
        if after is None or after[0] != size:
            raise PublishError(f"{target.where(name)}: the upload does not show its {size} bytes: not publishing the "
                               f"channel document")
        report.lines.append(f"bank: {target.where(name)} ({size / 1e6:.1f} MB)")
    elif there == (size, digest):
        report.lines.append(f"bank: {target.where(name)} is there already (the same file)")
    else:
        raise PublishError(f"{target.where(name)} exists with other content ({there[0]} bytes); an image id names one "
                           f"bank, and devices may be downloading that one: give the new image another id")
    now = time.time() if now is None else now
    fields = channel_fields(manifest, raw, size, channel, names, now, expires, min_version)
    doc_name = document_name(channel)
    if _still_good(target.read(doc_name), fields, seeds, now, expires):
        report.lines.append(f"channel document: {target.where(doc_name)} unchanged (it offers {manifest['version']} "
                            f"and is good for more than half of {expires / 86400:g} days)")
    else:
        try:
            data = make_document(fields, seeds)
        except ChannelError as e:
            raise PublishError(str(e)) from None
        target.put_document(doc_name, data)
        report.lines.append(f"channel document: {target.where(doc_name)}: {channel} -> {manifest['version']} (image "
                            f"{image}), expires {fields['expires']}")
    report.document_url = target.url(doc_name)
    return report


def channel_fields(manifest: dict, raw: bytes, size: int, channel: str, boards: list[str], now: float,
                   expires: float, min_version: str | None = None) -> dict:
    """The channel document's fields for a bank (its manifest, the manifest's bytes, the file's size)."""
    fields = {"channel": channel, "version": manifest["version"], "image": manifest["id"], "arch": manifest["arch"],
              "boards": sorted(set(boards)), "bank": bank_path(manifest["id"]), "size": size,
              "manifest": manifest_digest(raw), "published": format_utc(now), "expires": format_utc(now + expires)}
    if min_version is not None:
        fields["min_version"] = min_version
    return fields


def _still_good(old: bytes | None, fields: dict, seeds: list[bytes], now: float, expires: float) -> bool:
    """The published document says what `fields` says, signed by every one of these keys, and has more than
    half its time left."""
    if old is None:
        return False
    from overlay_layout import ed25519
    from overlay_layout.trust import KeySet

    publics = {key_id(p): p for p in (ed25519.keypair(seed)[0] for seed in seeds)}
    try:
        ch = parse_document(old, "the published document", KeySet(publics, len(publics)), False)
    except ChannelError:
        return False
    same = all(ch.doc.get(k) == v for k, v in fields.items() if k not in ("published", "expires"))
    same = same and ("min_version" in fields) == ("min_version" in ch.doc)
    return same and ch.expires - now > expires / 2
