"""Encrypted banks: a bank file whose squashfs, hash tree and chunk index only the devices it was made for
can read, so it can sit on an untrusted server, CDN or USB stick.

`bankboot image --encrypt-to KEY.pub` draws a random content key for the bank and seals it (libsodium's
sealed box) to each recipient's X25519 public key: a device's own, or a fleet key every device holds. The
manifest stays in clear and signed; its `encryption` lists the sealed keys by recipient key id, and its
sizes and hashes stay those of the plain files (what dm-verity and the signature cover is what boots).
Each member is encrypted with XChaCha20-Poly1305 under the content key:

- rootfs.squashfs: chunk by chunk, along the image's content-defined chunks (overlay_layout/chunks.py):
  chunk n is encrypted alone, nonce NONCE_CHUNK + n, so a device fetches any run of chunks by range and
  takes the ones it holds from its own images: deltas work as for a plain bank (16 bytes more per chunk);
- rootfs.verity and rootfs.chunks: each in one piece (fetched whole anyway).

The associated data binds a ciphertext to its member and image (the plain squashfs's sha256): a piece moved,
swapped or taken from another bank fails its tag. `bankctl stage` decrypts while staging and stores the
image plain, behind dm-verity like any other: the banks partition holds installed images in clear (the
encryption protects banks in transit and at rest off the device, not the device's own disk; that needs
dm-crypt under the banks partition with a key sealed to the device). The device's private key is where its
board says (contract.DEVICE_KEY by default); docs/trust.md says what each place protects against."""

from __future__ import annotations

import os

from overlay_layout import chunks, durable, hashing
from overlay_layout.bankfile import HEADER
from overlay_layout.layout import SQUASHFS, VERITY, LayoutError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from overlay_layout.bankfile import BankFile
    from overlay_layout.layout import Layout

PUBLIC_TAG = "bankboot-x25519"
PRIVATE_TAG = "bankboot-x25519-private"
TAG = 16  # x25519.TAG_BYTES
AD = b"bankboot encrypted bank 1\n"
NONCE_CHUNK, NONCE_VERITY, NONCE_INDEX = 1, 2, 3
RUN = 4 << 20  # at most this many bytes of ciphertext read (fetched) at once
SYNC_EVERY = 1 << 20  # fsync the partial squashfs this often (a resumed download keeps what was synced)


class EncryptionError(LayoutError):
    pass


# -- the layout: one owner for sizes, nonces and associated data ------------------------------------------
def member_size(manifest: Mapping[str, Any], name: str) -> int:
    """The size of an encrypted member in the bank file, from the plain sizes the manifest signs."""
    if name == SQUASHFS:
        return int(manifest["size"]) + TAG * int(manifest["chunks"]["count"])
    plain = manifest["verity"]["size"] if name == VERITY else manifest["chunks"]["size"]
    return int(plain) + TAG


def nonce(kind: int, n: int = 0) -> bytes:
    return bytes([kind]) + n.to_bytes(8, "big") + bytes(15)


def associated(manifest: Mapping[str, Any], name: str) -> bytes:
    return AD + name.encode() + b"\n" + str(manifest["sha256"]).encode()


def chunk_offsets(index: list[tuple[int, bytes]]) -> list[int]:
    """Where each chunk's ciphertext starts in the encrypted squashfs (and, last, its end)."""
    out, at = [0], 0
    for length, _ in index:
        at += length + TAG
        out.append(at)
    return out


# -- keys ----------------------------------------------------------------------------------------------------
def read_recipient(path: str) -> tuple[str, bytes]:
    """(key id, X25519 public key) of a recipient's .pub file."""
    from overlay_layout.trust import key_id, read_key_file

    public = read_key_file(path, PUBLIC_TAG, "X25519 public", comment_ok=True)
    return key_id(public), public


def read_device_key(path: str) -> tuple[str, bytes, bytes]:
    """(key id, public, secret) of a device's X25519 private key file."""
    from overlay_layout import x25519
    from overlay_layout.trust import TrustError, key_id, read_key_file

    try:
        public, secret = x25519.keypair(read_key_file(path, PRIVATE_TAG, "X25519 private", comment_ok=False))
    except TrustError as e:
        raise EncryptionError(str(e)) from e
    return key_id(public), public, secret


def seal_content_key(recipients: list[bytes]) -> tuple[bytes, dict[str, Any]]:
    """A new random content key and the manifest's `encryption` sealing it to each recipient."""
    from overlay_layout import x25519
    from overlay_layout.manifest import CIPHER
    from overlay_layout.trust import key_id

    key = os.urandom(x25519.KEY_BYTES)
    sealed = {key_id(pub): x25519.seal(key, pub).hex() for pub in recipients}
    return key, {"cipher": CIPHER, "recipients": [{"key": k, "sealed": v} for k, v in sorted(sealed.items())]}


def content_key(manifest: Mapping[str, Any], device_key: str, where: str) -> bytes:
    """The bank's content key, opened with this device's key; before anything is written, an error that
    says whose bank it is when it is not this device's."""
    from overlay_layout import x25519

    recipients = {r["key"]: r["sealed"] for r in manifest["encryption"]["recipients"]}
    names = ", ".join(sorted(recipients))
    if not os.path.exists(device_key):
        raise EncryptionError(f"{where} is encrypted (for key {names}) and this device has no decryption key at "
                              f"{device_key} (the board's device_key)")
    kid, public, secret = read_device_key(device_key)
    if kid not in recipients:
        raise EncryptionError(f"{where} is encrypted for key {names}, not for this device's key {kid} "
                              f"({device_key}): a bank for another device")
    key = x25519.unseal(bytes.fromhex(recipients[kid]), public, secret)
    if key is None or len(key) != x25519.KEY_BYTES:
        raise EncryptionError(f"{where}: its content key sealed to key {kid} does not open with {device_key} "
                              f"(damaged, or sealed to another key with that id)")
    return key


# -- the builder's side --------------------------------------------------------------------------------------
def encrypt_members(manifest: Mapping[str, Any], key: bytes, plain: dict[str, str], out: dict[str, str]) -> None:
    """Write each plain member file (`plain`: name -> path) encrypted to `out`'s path for it."""
    from overlay_layout import x25519

    index = chunks.parse(_read(plain[chunks.MEMBER]), plain[chunks.MEMBER])
    for name, path in plain.items():
        if name == SQUASHFS:
            with open(path, "rb") as src, open(out[name], "wb") as dst:
                for n, (length, _) in enumerate(index):
                    dst.write(x25519.encrypt(src.read(length), associated(manifest, name), nonce(NONCE_CHUNK, n), key))
        else:
            kind = NONCE_VERITY if name == VERITY else NONCE_INDEX
            with open(out[name], "wb") as dst:
                dst.write(x25519.encrypt(_read(path), associated(manifest, name), nonce(kind), key))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# -- the device's side ---------------------------------------------------------------------------------------
def _fetch(bank: BankFile, offset: int, size: int) -> bytes:
    """Bytes of the bank file. A network failure (net.errors.NetError) goes up as it is: the network stage
    makes it a DownloadError that says whether the same command resumes (net/download.py)."""
    from overlay_layout.stage import StageError

    try:
        return bank.read(offset, size)
    except OSError as e:
        raise StageError(f"cannot read {bank.path}: {e.strerror}") from e


def _open(box: bytes, manifest: Mapping[str, Any], name: str, n: int, key: bytes, kind: int, where: str) -> bytes:
    from overlay_layout import x25519

    plain = x25519.decrypt(box, associated(manifest, name), nonce(kind, n), key)
    if plain is None:
        what = f"chunk {n} of {name}" if kind == NONCE_CHUNK else name
        raise EncryptionError(f"{where}: {what} fails its authentication tag: the bank is damaged, truncated or was "
                              f"changed after it was made")
    return plain


def _whole(bank: BankFile, name: str, key: bytes, work: str) -> bytes:
    """A small member (hash tree, chunk index), decrypted, checked against the manifest, written plain into
    `work` (kept from an earlier attempt when it is whole)."""
    path = os.path.join(work, name)
    want = bank.expected(name)
    try:
        with open(path, "rb") as f:
            kept = f.read()
        if hashing.sha256(kept).hexdigest() == want:
            return kept
    except OSError:
        pass
    member = bank.members[name]
    if bank.derive:  # placed from the manifest's sizes (a bank on a server): its header must be there too
        raw = _fetch(bank, member.offset - HEADER, HEADER + member.size)
        bank.check_header(member, raw[:HEADER])
        box = raw[HEADER:]
    else:
        box = _fetch(bank, member.offset, member.size)
    plain = _open(box, bank.manifest, name, 0, key,
                  NONCE_VERITY if name == VERITY else NONCE_INDEX, bank.path)
    if hashing.sha256(plain).hexdigest() != want:
        raise EncryptionError(f"{bank.path}: {name} decrypts, but not to what the signed manifest says")
    durable.write_file(path, plain)
    return plain


def local_chunks(layout: Layout) -> dict[bytes, tuple[str, int, int]]:
    """Every chunk the installed images hold (they are stored plain), by sha256."""
    have: dict[bytes, tuple[str, int, int]] = {}
    for image in layout.images():
        index = chunks.read(os.path.join(layout.image_dir(image), chunks.MEMBER))
        if index is not None:
            for digest, where in chunks.located(index, layout.squashfs(image)).items():
                have.setdefault(digest, where)
    return have


class _Partial:
    """The plain squashfs being written, chunk by chunk, each already checked against the signed chunk index
    (which, itself checked against the manifest, makes a whole-file hash redundant here; the trial's first
    boot hashes it all again). `sync_every`: fsync that often, so a resumed download keeps what was synced
    (a local stage, never resumed, fsyncs once at the end)."""

    def __init__(self, path: str, index: list[tuple[int, bytes]], progress: Callable[[int, int], None] | None,
                 total: int, sync_every: int | None) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.pos, self.done = 0, 0  # bytes and chunks of the file that match the index, from an earlier attempt
        for length, digest in index:
            data = os.pread(self.fd, length, self.pos)
            if len(data) != length or hashing.sha256(data).digest() != digest:
                break
            self.pos += length
            self.done += 1
        self.resumed = self.pos
        os.ftruncate(self.fd, self.pos)
        os.lseek(self.fd, self.pos, os.SEEK_SET)
        self.synced = self.pos
        self.progress, self.total, self.sync_every = progress, total, sync_every

    def write(self, data: bytes) -> None:
        durable.checkpoint("decrypt a chunk")
        durable.write_all(self.fd, data)
        self.pos += len(data)
        if self.sync_every is not None and self.pos - self.synced >= self.sync_every:
            os.fsync(self.fd)
            self.synced = self.pos
        if self.progress is not None:
            self.progress(self.pos, self.total)
        if self.progress is not None:
            self.progress(self.pos, self.total)

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


def fill(bank: BankFile, work: str, key: bytes, layout: Layout | None,
         progress: Callable[[int, int], None] | None = None) -> str:
    """Decrypt an encrypted bank's members into `work` as plain files, each checked against the signed
    manifest (every chunk against the signed chunk index, before it is written). `layout`: take the chunks
    the installed images hold from them (a bank on a server: only the others are fetched). What an earlier
    attempt left in `work` is checked and kept. Returns where the squashfs's bytes came from."""
    m = bank.manifest
    index = chunks.parse(_whole(bank, chunks.MEMBER, key, work), f"{bank.path}:{chunks.MEMBER}")
    if sum(length for length, _ in index) != m["size"] or len(index) != m["chunks"]["count"]:
        raise EncryptionError(f"{bank.path}: its chunk index does not describe a squashfs of {m['size']} bytes")
    _whole(bank, VERITY, key, work)
    final, part = os.path.join(work, SQUASHFS), os.path.join(work, SQUASHFS + ".part")
    if os.path.exists(final):
        os.replace(final, part)
    have = local_chunks(layout) if layout is not None else {}
    offsets = chunk_offsets(index)
    base = bank.members[SQUASHFS].offset
    out = _Partial(part, index, progress, m["size"], SYNC_EVERY if layout is not None else None)
    network = local = 0
    try:
        n = out.done
        while n < len(index):
            length, digest = index[n]
            where = have.get(digest)
            data = chunks.read_chunk(where, digest) if where else None
            if data is not None:
                out.write(data)
                local += length
                n += 1
                continue
            end = n + 1  # a run of chunks to read at once: this one and the missing ones after it
            while end < len(index) and index[end][1] not in have and offsets[end + 1] - offsets[n] <= RUN:
                end += 1
            run = _fetch(bank, base + offsets[n], offsets[end] - offsets[n])
            network += len(run)
            for k in range(n, end):
                plain = _open(run[offsets[k] - offsets[n]:offsets[k + 1] - offsets[n]], m, SQUASHFS, k, key,
                              NONCE_CHUNK, bank.path)
                if hashing.sha256(plain).digest() != index[k][1]:
                    raise EncryptionError(f"{bank.path}: chunk {k} decrypts, but not to what the signed chunk index "
                                          f"says")
                out.write(plain)
            n = end
    finally:
        out.close()
    if out.pos != m["size"]:
        os.unlink(part)
        raise EncryptionError(f"{bank.path}: the decrypted squashfs is {out.pos} bytes, not the signed {m['size']}")
    os.replace(part, final)
    durable.fsync_dir(work)
    return (f"{network / 1e6:.1f} MB of ciphertext read, {local / 1e6:.1f} MB taken from images on this device, "
            f"{out.resumed / 1e6:.1f} MB decrypted by an earlier attempt")
