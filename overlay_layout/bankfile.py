"""The bank file: what `bankboot image` writes and `bankctl stage`, `bankboot inspect` and `bankboot disk`
read. A ustar archive of manifest.json, rootfs.squashfs and, for a verity image, rootfs.verity, in that
order, so a reader checks the manifest (and its signature) before it reads a byte of the image.

The reader parses the 512-byte ustar headers itself rather than through tarfile: it needs only names,
sizes and offsets (the data is read straight from the descriptor by hashing.copy_hashed), it accepts only
what the builder writes, and tarfile costs bankctl a noticeable import on a slow board."""

from __future__ import annotations

import os

from overlay_layout import hashing
from overlay_layout.chunks import MEMBER as CHUNKS
from overlay_layout.layout import MANIFEST, SQUASHFS, VERITY, LayoutError
from overlay_layout.manifest import MAX_MANIFEST, parse_manifest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from overlay_layout.records import Manifest

ORDER = (MANIFEST, SQUASHFS, VERITY, CHUNKS)
HEADER = 512


class BankFileError(LayoutError):
    pass


class Member:
    """One file in the bank: its name, size and where its data starts in the bank file."""

    __slots__ = ("name", "offset", "size")

    def __init__(self, name: str, offset: int, size: int) -> None:
        self.name, self.offset, self.size = name, offset, size


def _header(raw: bytes, where: str) -> tuple[str, int, bytes] | None:
    """(name, size, type) of a ustar header; None for the end-of-archive block."""
    if raw == bytes(HEADER):
        return None
    if len(raw) < HEADER or raw[257:262] != b"ustar":
        raise BankFileError(f"{where}: not a bank file (no ustar header)")
    checksum = sum(raw[:148]) + 8 * 32 + sum(raw[156:])
    try:
        if int(raw[148:156].split(b"\0")[0].strip() or b"-1", 8) != checksum:
            raise ValueError
        size = int(raw[124:136].split(b"\0")[0].strip() or b"0", 8)
    except ValueError:
        raise BankFileError(f"{where}: damaged archive header") from None
    name = raw[0:100].split(b"\0")[0]
    prefix = raw[345:500].split(b"\0")[0]
    full = (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")
    return full, size, raw[156:157]


class Source:
    """Where a bank file's bytes come from when it is not a local file (overlay_layout/net/download.py)."""

    def pread(self, size: int, offset: int) -> bytes:
        raise NotImplementedError

    def size(self) -> int:
        raise NotImplementedError


class BankFile:
    """An open bank file: its manifest (parsed and checked for shape, NOT for its signature: that is the
    caller's, against its own trust policy) and its members. Use as a context manager."""

    def __init__(self, path: str, source: Source | None = None, derive: bool = False) -> None:
        """A local file or block device at `path`, or whatever `source` reads (a bank on a server: `path`
        is then its URL, for messages). derive: read only the first two headers (manifest, squashfs) and
        place the members after the squashfs from the manifest's sizes, where the builder puts them (a
        server without byte ranges would otherwise send the whole file to reach their headers; whoever
        reads those members checks their headers with `check_header`)."""
        self.path = path
        self.derive = derive
        self.fd = -1
        if source is None:
            try:
                self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise BankFileError(f"cannot read {path}: {e.strerror}") from e
        self.source = source
        try:
            self.members = self._read_members()
            self.manifest = self._read_manifest()
        except BaseException:
            self.close()
            raise

    def _pread(self, size: int, offset: int) -> bytes:
        if self.source is not None:
            return self.source.pread(size, offset)
        try:
            return os.pread(self.fd, size, offset)
        except OSError as e:
            raise BankFileError(f"cannot read {self.path}: {e.strerror}") from e

    def read(self, offset: int, size: int) -> bytes:
        """Exactly `size` bytes of the bank file from `offset`; fewer is a truncated file."""
        data = self._pread(size, offset)
        if len(data) != size:
            raise BankFileError(f"{self.path} is truncated: {size} bytes wanted at {offset}, {len(data)} there")
        return data

    @property
    def encrypted(self) -> bool:
        """Its members are encrypted (overlay_layout/encryption.py): only a recipient's key reads them."""
        return "encryption" in self.manifest

    def _size(self) -> int:
        if self.source is not None:
            return self.source.size()
        return os.lseek(self.fd, 0, os.SEEK_END)  # a block device's size too

    def __enter__(self) -> BankFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _read_members(self) -> dict[str, Member]:
        members: dict[str, Member] = {}
        offset = 0
        last = -1
        while not (self.derive and len(members) == 2):
            raw = self._pread(HEADER, offset)
            if not raw and members:
                break  # no end-of-archive blocks: still every member is whole (checked below)
            header = _header(raw, self.path)
            if header is None:
                break
            name, size, kind = header
            rank = ORDER.index(name) if name in ORDER else -1
            # the manifest, then the squashfs, come first; the hash tree and the chunk index after, if any
            if kind not in (b"0", b"\0") or rank < 0 or (rank != len(members) if len(members) < 2 else rank <= last):
                order = f"{MANIFEST}, {SQUASHFS}, then {VERITY} and {CHUNKS} where the image has them"
                raise BankFileError(f"{self.path}: a bank file holds {order}, in that order; found {name!r} "
                                    f"after {', '.join(members) or 'nothing'}")
            if name == MANIFEST and size > MAX_MANIFEST:
                raise BankFileError(f"{self.path}: {MANIFEST} of {size} bytes is too big to be a manifest")
            last = rank
            members[name] = Member(name, offset + HEADER, size)
            offset += HEADER + (size + HEADER - 1) // HEADER * HEADER
        if MANIFEST not in members:
            raise BankFileError(f"{self.path}: not a bank file (it does not start with {MANIFEST})")
        if not self.derive:
            self._check_end(members)
        return members

    def _check_end(self, members: dict[str, Member]) -> None:
        final = list(members.values())[-1]
        end = self._size()
        if final.offset + final.size > end:
            raise BankFileError(f"{self.path} is truncated: {final.name} needs {final.offset + final.size} "
                                f"bytes, the file has {end}")

    def _derive_tail(self, manifest: Manifest, sized: dict[str, int]) -> None:
        """The members after the squashfs, where the builder writes them (see __init__); `sized`: an encrypted
        bank's member sizes (each plain size and its tags)."""
        sq = self.members[SQUASHFS]
        offset = sq.offset + (sq.size + HEADER - 1) // HEADER * HEADER
        for name, part in ((VERITY, manifest.get("verity")), (CHUNKS, manifest.get("chunks"))):
            if part:
                size = sized.get(name, part["size"])
                self.members[name] = Member(name, offset + HEADER, size)
                offset += HEADER + (size + HEADER - 1) // HEADER * HEADER
        self._check_end(self.members)

    def check_header(self, member: Member, raw: bytes) -> None:
        """The 512 bytes before a derived member must be its ustar header."""
        header = _header(raw, self.path)
        if header is None or header[0] != member.name or header[1] != member.size:
            found = f"{header[0]!r} of {header[1]} bytes" if header else "the end of the archive"
            raise BankFileError(f"{self.path}: expected the header of {member.name} ({member.size} bytes) at byte "
                                f"{member.offset - HEADER}, found {found}: not a bank file as bankboot writes them")

    def _read_manifest(self) -> Manifest:
        m = self.members[MANIFEST]
        raw = self._pread(m.size, m.offset)
        if len(raw) != m.size:
            raise BankFileError(f"{self.path} is truncated in {MANIFEST}")
        manifest = parse_manifest(raw, f"{self.path}:{MANIFEST}")
        sized: dict[str, int] = {}
        if "encryption" in manifest:  # the members' sizes in the bank: the plain ones and the tags
            from overlay_layout.encryption import member_size

            sized = {name: member_size(manifest, name) for name in (SQUASHFS, VERITY, CHUNKS)}
        sq = self.members.get(SQUASHFS)
        if sq is None:
            raise BankFileError(f"{self.path}: {SQUASHFS} must follow {MANIFEST}")
        if sq.size != sized.get(SQUASHFS, manifest["size"]):
            what = " encrypted" if sized else ""
            raise BankFileError(f"{self.path}:{what} squashfs is {sq.size} bytes, the manifest says "
                                f"{sized.get(SQUASHFS, manifest['size'])}")
        if self.derive:
            self._derive_tail(manifest, sized)
        verity = manifest.get("verity")
        if verity and (VERITY not in self.members or self.members[VERITY].size != sized.get(VERITY, verity["size"])):
            raise BankFileError(f"{self.path}: {VERITY} of {sized.get(VERITY, verity['size'])} bytes must follow "
                                f"{SQUASHFS}")
        if not verity and VERITY in self.members:
            raise BankFileError(f"{self.path}: has {VERITY} but its manifest describes no hash tree")
        chunks = manifest.get("chunks")
        if chunks and (CHUNKS not in self.members or self.members[CHUNKS].size != sized.get(CHUNKS, chunks["size"])):
            raise BankFileError(f"{self.path}: {CHUNKS} of {sized.get(CHUNKS, chunks['size'])} bytes must end the "
                                f"bank file")
        if not chunks and CHUNKS in self.members:
            raise BankFileError(f"{self.path}: has {CHUNKS} but its manifest describes no chunk index")
        return manifest

    def expected(self, name: str) -> str:
        """The sha256 the manifest gives for a member."""
        if name == SQUASHFS:
            return self.manifest["sha256"]
        return self.manifest["chunks"]["sha256"] if name == CHUNKS else self.manifest["verity"]["sha256"]

    def expected_size(self, name: str) -> int:
        """The size the manifest gives for a member: the plain file's, as a device stores it (an encrypted
        bank's member is larger by its tags)."""
        if name == SQUASHFS:
            return int(self.manifest["size"])
        return int(self.manifest["chunks"]["size"] if name == CHUNKS else self.manifest["verity"]["size"])

    def payload(self) -> list[Member]:
        """The members after the manifest: the squashfs, then the hash tree if any."""
        return [m for name, m in self.members.items() if name != MANIFEST]

    def _check(self, member: Member, done_digest: tuple[int, str]) -> None:
        got, want = done_digest[1], self.expected(member.name)
        if got != want:
            raise BankFileError(f"{self.path}: {member.name} has sha256 {got}, which does not match the signed "
                                f"manifest's {want}: the file is damaged or was changed after signing")

    def verify(self, member: Member) -> bool:
        """Whether a member's bytes are what the manifest says (reads all of it; an encrypted bank's are checked
        by decrypting them, encryption.fill)."""
        if self.encrypted:
            raise BankFileError(f"{self.path} is encrypted: its files are checked by decrypting them")
        try:
            return hashing.hash_fd(self.fd, member.offset, member.size)[1] == self.expected(member.name)
        except hashing.ShortRead:
            return False

    def extract(self, member: Member, dest: str, progress: Callable[[int, int], None] | None = None) -> None:
        """Copy a member into the new file `dest`, fsynced, checked against the manifest while copying;
        nothing is left at `dest` when it does not match."""
        if self.encrypted:
            raise BankFileError(f"{self.path} is encrypted: its files are copied by decrypting them")
        try:
            result = hashing.copy_hashed(self.fd, member.offset, member.size, dest, progress)
        except hashing.ShortRead as e:
            raise BankFileError(f"{self.path} is truncated or unreadable: {member.name} {e}") from e
        try:
            self._check(member, result)
        except BankFileError:
            os.unlink(dest)
            raise
