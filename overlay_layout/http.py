"""Reading a file over HTTP/1.1 by byte ranges, for `bankctl stage URL`: just enough HTTP for a static file
server (nginx, or `bankboot serve`), written on `socket` because the frozen init carries neither http.client
(it drags in email) nor ssl. Integrity never depends on the transport: the caller checks the signed
manifest first and every byte after it against signed hashes, so plain http is safe to use.

Transient failures (a link that drops, a timeout, a 5xx) are retried with backoff, each retry continuing
from the byte it had reached; a server that ignores Range still works (its bytes before the wanted range
are read and dropped, and `ranges` says so)."""

from __future__ import annotations

import socket
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

BLOCK = 1 << 20
MAX_HEADER = 64 << 10


class FetchError(RuntimeError):
    pass


class _Retry(Exception):
    """A failure worth another try (network, timeout, server error)."""


def parse_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http:// URL; FetchError names what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise FetchError(f"{url}: not an http:// URL")
    if scheme.lower() == "https":
        raise FetchError(f"{url}: https needs a TLS client, which this device's bankctl does not carry; use "
                         f"http:// (every byte is checked against the signed manifest, whatever the transport)")
    hostport, _, path = rest.partition("/")
    host, colon, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
    if not colon:
        host, port = hostport, "80"
    host = host.strip("[]")
    if not host or not host.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise FetchError(f"{url}: no host, a host name that is not ASCII (use its xn-- form), or a bad port")
    return host, int(port), "/" + path


class HttpFile:
    """A file on an HTTP server, read by ranges. `say` gets a line for each retry."""

    def __init__(self, url: str, timeout: float = 20.0, retries: int = 5,
                 say: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.host, self.port, self.path = parse_url(url)
        self.timeout, self.retries = timeout, retries
        self.say = say or (lambda _line: None)
        self.size: int | None = None  # learnt from the first response
        self.ranges = True  # False once the server answered a range request with the whole file
        self.received = 0  # bytes that came over the network

    # -- one request ------------------------------------------------------------------------------------
    def _open(self, start: int, end: int | None) -> tuple[socket.socket, object, int, int]:
        """Send GET for bytes start..end (inclusive; None: to the end). Returns (socket, reader, offset the
        body starts at, body length)."""
        try:
            # the name as bytes: a str would go through the idna codec, which the frozen init does not carry
            sock = socket.create_connection((self.host.encode("ascii"), self.port),  # type: ignore[arg-type]
                                            timeout=self.timeout)
        except OSError as e:
            raise _Retry(f"cannot reach {self.host}:{self.port}: {e.strerror or e}") from None
        try:
            want = f"bytes={start}-{'' if end is None else end}"
            sock.sendall((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nRange: {want}\r\n"
                          f"User-Agent: bankctl\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n").encode())
            reader = sock.makefile("rb")
            status, headers = _read_head(reader)
        except OSError as e:
            sock.close()
            raise _Retry(f"{self.host}:{self.port} dropped the request: {e.strerror or e}") from None
        except BaseException:
            sock.close()
            raise
        try:
            return (sock, reader, *self._body(status, headers, start))
        except BaseException:
            sock.close()
            raise

    def _body(self, status: int, headers: dict[str, str], start: int) -> tuple[int, int]:
        if status in (301, 302, 303, 307, 308) and headers.get("location", "").startswith("http://"):
            raise _Redirect(headers["location"])
        if status >= 500:
            raise _Retry(f"{self.url}: the server says {status}")
        if status == 416:
            raise FetchError(f"{self.url}: the server has no bytes from {start} on (416): the file is shorter "
                             f"than its bank header says")
        if status not in (200, 206):
            what = {404: "not found", 403: "forbidden", 401: "needs authorisation"}.get(status, "refused")
            raise FetchError(f"{self.url}: {what} (HTTP {status})")
        if "chunked" in headers.get("transfer-encoding", ""):
            raise FetchError(f"{self.url}: the server sent a chunked response; bankctl reads static files")
        length = int(headers.get("content-length", "-1")) if headers.get("content-length", "").isdigit() else -1
        if status == 206:
            first, _, total = headers.get("content-range", "").removeprefix("bytes ").partition("/")
            begin = first.partition("-")[0]
            if not begin.isdigit() or int(begin) != start:
                raise FetchError(f"{self.url}: the server sent another range than asked ({first})")
            if total.isdigit():
                self.size = int(total)
            return start, length
        # 200: the whole file, the server ignores Range
        if self.ranges:
            self.say("the server does not do ranges (HTTP Range): every request reads from the start of the "
                     "file, and an interrupted download starts again")
        self.ranges = False
        if length >= 0:
            self.size = length
        return 0, length

    # -- reading ------------------------------------------------------------------------------------------
    def stream(self, offset: int, length: int, sink: Callable[[memoryview], None]) -> None:
        """Hand `length` bytes from `offset` to `sink`, in blocks, retrying from where it got to."""
        done, tries = 0, 0
        while done < length:
            delivered = _Counter(sink)
            try:
                sock, reader, at, body = self._open(offset + done, offset + length - 1)
                try:
                    self._pump(reader, at, body, offset + done, length - done, delivered)
                finally:
                    sock.close()
                tries = 0
            except _Redirect as r:
                self.host, self.port, self.path = parse_url(r.location)
                tries += 1
                if tries > 3:
                    raise FetchError(f"{self.url}: too many redirects") from None
            except _Retry as e:
                tries += 1
                if tries > self.retries:
                    raise FetchError(f"{e} (gave up after {self.retries} retries)") from None
                pause = min(30, 2 ** (tries - 1))
                self.say(f"{e}; retrying in {pause} s ({tries} of {self.retries}), from byte "
                         f"{offset + done + delivered.count}")
                time.sleep(pause)
            finally:
                done += delivered.count  # what the sink has is never asked for again

    def _pump(self, reader: object, at: int, body: int, want_at: int, want: int,
              sink: Callable[[memoryview], None]) -> int:
        """Copy the wanted bytes of one response body to sink; returns how many arrived."""
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        got, skip = 0, want_at - at
        left = body if body >= 0 else None
        while got < want:
            n = min(BLOCK, want - got + max(skip, 0))
            if left is not None:
                n = min(n, left)
                if n == 0:
                    break
            try:
                r = reader.readinto(view[:n])  # type: ignore[attr-defined]
            except OSError as e:
                raise _Retry(f"the connection to {self.host}:{self.port} broke after {got} bytes: "
                             f"{e.strerror or e}") from None
            if not r:
                break
            if left is not None:
                left -= r
            self.received += r
            chunk = view[:r]
            if skip > 0:
                drop = min(skip, r)
                skip -= drop
                chunk = chunk[drop:]
            if len(chunk):
                chunk = chunk[:want - got]
                sink(chunk)
                got += len(chunk)
        if got < want:
            if got == 0 and left == 0:
                raise FetchError(f"{self.url}: the file ends before byte {want_at + want} (its bank header says "
                                 f"it is longer)")
            raise _Retry(f"the connection to {self.host}:{self.port} ended after {got} of {want} bytes")
        return got

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        self.stream(offset, length, out.extend)
        return bytes(out)

    def read_upto(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`: fewer where the file ends (the size comes with the answer)."""
        if self.size is None:
            self.read(0, 1)
        assert self.size is not None
        return self.read(offset, max(0, min(length, self.size - offset)))


class _Counter:
    """Passes blocks on to a sink and counts them: a retry continues after the last byte the sink got."""

    def __init__(self, sink: Callable[[memoryview], None]) -> None:
        self.sink, self.count = sink, 0

    def __call__(self, block: memoryview) -> None:
        self.sink(block)
        self.count += len(block)


class _Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _read_head(reader: object) -> tuple[int, dict[str, str]]:
    line = reader.readline(MAX_HEADER)  # type: ignore[attr-defined]
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        if not line:
            raise _Retry("the server closed the connection without an answer")
        raise FetchError(f"not an HTTP server (it answered {line[:60]!r})")
    headers: dict[str, str] = {}
    size = len(line)
    while True:
        line = reader.readline(MAX_HEADER)  # type: ignore[attr-defined]
        size += len(line)
        if line in (b"\r\n", b"\n", b"") or size > MAX_HEADER:
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers
