"""SHA-256 by the kernel, through its crypto socket (AF_ALG): the kernel hashes with the fastest
implementation it has, which on the boards is the one the initramfs loads first (`optional_modules`:
ARMv8's SHA-256 instructions, ARMv7's or x86's SIMD code), where Python's own `_sha256` is portable C at
fifteen or more instructions a byte. A trial's first boot hashes the whole image, and `bankctl stage`
every byte it copies: on a slow board that is most of their time.

Imports only `_socket` (the C module: `socket.py` brings `enum` and `selectors`). Needs the kernel's
`algif_hash` module (and `af_alg`): the init and bankctl load it from their on-demand set before they
call enable(). Where the kernel has no AF_ALG, enable() says so and hashing stays as it was."""

from __future__ import annotations

import _socket

MSG_MORE = 0x8000
DIGEST_SIZE = 32


class KernelSha256:
    """A hashlib-like sha256 object (update, digest, hexdigest) whose work the kernel does. One per
    digest: the kernel's operation socket is opened here and closed when the digest is read."""

    __slots__ = ("_done", "_op")
    name = "sha256"
    digest_size = DIGEST_SIZE

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        fd, _ = _tfm()._accept()  # type: ignore[attr-defined]  # the C socket's accept, as socket.py uses it
        # Family, type and protocol given, as socket.py's accept gives them: with fileno alone, CPython asks
        # getsockname(2) for the family, which an AF_ALG socket refuses (EOPNOTSUPP), and every digest failed.
        self._op = _socket.socket(_socket.AF_ALG, _socket.SOCK_SEQPACKET, 0, fd)
        self._done: bytes | None = None
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._done is not None:
            raise ValueError("sha256 (kernel): update after digest")
        self._op.sendall(data, MSG_MORE)

    def digest(self) -> bytes:
        if self._done is None:
            self._op.sendall(b"", 0)  # no MSG_MORE: the data is complete
            got = self._op.recv(DIGEST_SIZE)
            self._op.close()
            if len(got) != DIGEST_SIZE:
                raise OSError(f"the kernel's sha256 returned {len(got)} bytes")
            self._done = got
        return self._done

    def hexdigest(self) -> str:
        return self.digest().hex()

    def __del__(self) -> None:
        try:
            self._op.close()
        except (AttributeError, OSError):
            pass


_bound: _socket.socket | None = None


def _tfm() -> _socket.socket:
    """The socket bound to the kernel's sha256 transform, from which each digest's socket is accepted."""
    global _bound
    if _bound is None:
        s = _socket.socket(_socket.AF_ALG, _socket.SOCK_SEQPACKET, 0)
        try:
            s.bind(("hash", "sha256"))
        except OSError:
            s.close()
            raise
        _bound = s
    return _bound


def available() -> str | None:
    """None when the kernel hashes for us (checked with a known digest), else why not."""
    try:
        got = KernelSha256(b"abc").hexdigest()
    except OSError as e:
        return f"the kernel's crypto socket is not available ({e.strerror or e})"
    if got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad":
        return "the kernel's sha256 gave a wrong digest"
    return None


def implementation() -> str | None:
    """Which driver the kernel uses for sha256 (/proc/crypto: the highest priority), for messages."""
    try:
        with open("/proc/crypto") as f:
            text = f.read()
    except OSError:
        return None
    best, prio = None, -1
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if fields.get("name") == "sha256" and fields.get("type") in ("shash", "ahash"):
            p = int(fields.get("priority", "0") or 0)
            if p > prio:
                best, prio = fields.get("driver"), p
    return best
