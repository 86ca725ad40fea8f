"""One HTTP/1.1 connection, kept alive across requests: just enough HTTP for file servers, CDNs and object
stores, written on `socket` (http.client drags in email, which the frozen program does not carry).

Every read has a deadline, so no server can hold a download for ever: the head of an answer must come
within `timeout` seconds and fit in MAX_HEAD bytes (a header without end is refused); a body must bring at
least MIN_PROGRESS bytes in every `timeout` seconds (a server that drips a byte a second stalls out).
Bodies are delimited by Content-Length, chunked transfer coding or the end of the connection; a connection
is reused only when its last answer was read to its end and neither side asked to close it."""

from __future__ import annotations

import binascii
import socket
import time

from overlay_layout.net.errors import ConnectError, HttpStatus, LinkError, NetError, ProtocolError
from overlay_layout.net.url import Url

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from overlay_layout.net.tls import Tls

MAX_HEAD = 64 << 10  # an answer's status line and headers
MAX_HEADERS = 200
MIN_PROGRESS = 1024  # bytes a body must bring in every `timeout` seconds
READ_BLOCK = 256 << 10
USER_AGENT = "bankctl"

class Limits:
    """The time limits of a connection: `connect` for TCP (and TLS) set-up, `timeout` for every wait
    after it (see the module's docstring)."""

    __slots__ = ("connect", "timeout")

    def __init__(self, connect: float = 10.0, timeout: float = 20.0) -> None:
        self.connect, self.timeout = connect, timeout


def basic_auth(user: str, password: str) -> str:
    return "Basic " + binascii.b2a_base64(f"{user}:{password}".encode(), newline=False).decode()


class Connection:
    """A connection to the server of `url` (or to `proxy`, which then forwards or tunnels), in TLS for
    https (`tls`)."""

    def __init__(self, url: Url, limits: Limits, proxy: Url | None = None, tls: Tls | None = None) -> None:
        self.origin, self.proxy, self.limits, self.tls = url.origin, proxy, limits, tls
        self.host, self.port, self.scheme = url.host, url.port, url.scheme
        self.where = url.authority + (f" through the proxy {proxy.authority}" if proxy else "")
        self.sock: socket.socket | None = None
        self.reader: Reader | None = None
        self.requests = 0  # answered on this connection (a stale kept-alive one is retried once, at once)
        self._received = 0  # by readers of earlier sockets

    @property
    def received(self) -> int:
        """Bytes received on this connection's sockets, heads and bodies."""
        return self._received + (self.reader.received if self.reader else 0)

    # -- set-up ------------------------------------------------------------------------------------------
    def open(self) -> None:
        host, port = (self.proxy.host, self.proxy.port) if self.proxy else (self.host, self.port)
        try:
            # the name as bytes: a str would go through the idna codec, which the frozen program lacks
            sock = socket.create_connection((host.encode("ascii"), port),  # type: ignore[arg-type]
                                            timeout=self.limits.connect)
        except socket.gaierror as e:
            raise ConnectError(f"cannot resolve {host}: {e.strerror or e}") from e
        except TimeoutError as e:
            raise ConnectError(f"cannot reach {host}:{port}: no answer in {self.limits.connect:g} s") from e
        except OSError as e:
            raise ConnectError(f"cannot reach {host}:{port}: {e.strerror or e}") from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.proxy and self.scheme == "https":
                self._tunnel(sock)
            if self.scheme == "https":
                assert self.tls is not None
                sock.settimeout(self.limits.connect)
                sock = self.tls.wrap(sock, self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        tls = self.tls
        self.reader = Reader(sock, self.limits.timeout, self.where,
                             (lambda e: tls.explain_read(e, self.host)) if tls else None)
        self.requests = 0

    def _tunnel(self, sock: socket.socket) -> None:
        """CONNECT through the proxy: TLS then runs end to end with the server."""
        assert self.proxy is not None
        target = Url(self.scheme, self.host, self.port, "/").authority
        if ":" not in target.rpartition("]")[2]:
            target += f":{self.port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", f"User-Agent: {USER_AGENT}"]
        if self.proxy.user is not None:
            lines.append(f"Proxy-Authorization: {basic_auth(self.proxy.user, self.proxy.password or '')}")
        sock.settimeout(self.limits.timeout)
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        except OSError as e:
            raise ConnectError(f"the proxy {self.proxy.authority} dropped the connection: {e.strerror or e}") from e
        reader = Reader(sock, self.limits.timeout, f"the proxy {self.proxy.authority}")
        try:
            status, reason, _, _ = reader.read_head()
        finally:
            self._received += reader.received
        if status == 407:
            raise HttpStatus(f"the proxy {self.proxy.authority} wants a user name and password (HTTP 407): put "
                             f"them in the proxy setting, http://user:password@host:port", 407)
        if not 200 <= status < 300:
            raise ConnectError(f"the proxy {self.proxy.authority} would not connect to {target}: HTTP {status} "
                               f"{reason}")
        if reader.buffered():
            raise ProtocolError(f"the proxy {self.proxy.authority} sent data before the tunnel was open")

    def _alert(self) -> NetError | None:
        """Why a TLS server closed the connection while a request was sent: the alert it sent, if any (a TLS
        1.3 server refuses a client certificate after the client thinks the handshake is done)."""
        if self.tls is None or self.sock is None:
            return None
        try:
            self.sock.settimeout(1.0)
            self.sock.recv(1)
        except OSError as e:
            return self.tls.explain_read(e, self.host)
        return None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        if self.reader is not None:
            self._received += self.reader.received
        self.sock = self.reader = None

    # -- one request ---------------------------------------------------------------------------------------
    def request(self, url: Url, headers: list[tuple[str, str]]) -> Response:
        """GET `url` (same origin as the connection). A connection the server closed while it idled is
        reported as a LinkError with `stale` set, so the caller retries at once on a new one."""
        if self.sock is None:
            self.open()
        assert self.sock is not None and self.reader is not None
        target = str(url) if self.proxy and self.scheme == "http" else url.target
        lines = [f"GET {target} HTTP/1.1", f"Host: {url.authority}", f"User-Agent: {USER_AGENT}", "Accept: */*",
                 "Accept-Encoding: identity"]
        if url.user is not None:
            lines.append(f"Authorization: {basic_auth(url.user, url.password or '')}")
        if self.proxy and self.scheme == "http" and self.proxy.user is not None:
            lines.append(f"Proxy-Authorization: {basic_auth(self.proxy.user, self.proxy.password or '')}")
        lines += [f"{k}: {v}" for k, v in headers]
        reused = self.requests > 0
        try:
            self.sock.settimeout(self.limits.timeout)
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            while True:
                status, reason, version, head = self.reader.read_head()
                if not 100 <= status < 200:
                    break
        except LinkError as e:
            self.close()
            e.stale = e.stale and reused
            raise
        except OSError as e:
            alert = self._alert()
            self.close()
            raise alert or LinkError(f"{self.where} dropped the request: {e.strerror or e}", stale=reused) from e
        except NetError:
            self.close()
            raise
        self.requests += 1
        return Response(self, status, reason, version, head)


class Reader:
    """Buffered reads from a socket with the deadlines of the module's docstring."""

    def __init__(self, sock: socket.socket, timeout: float, where: str,
                 explain: Callable[[OSError], NetError | None] | None = None) -> None:
        self.sock, self.timeout, self.where, self.explain = sock, timeout, where, explain
        self.buf = bytearray()
        self.received = 0
        self.window_start, self.window_bytes = time.monotonic(), 0

    def buffered(self) -> int:
        return len(self.buf)

    def _recv_into(self, view: memoryview, deadline: float | None = None) -> int:
        """One read from the socket into `view`: by `deadline` (an answer's head), else within the body's
        progress window (MIN_PROGRESS bytes every `timeout` seconds)."""
        while True:
            now = time.monotonic()
            if deadline is not None:
                left = deadline - now
                if left <= 0:
                    raise LinkError(f"{self.where} did not send its answer's header within {self.timeout:g} s")
            else:
                left = self.window_start + self.timeout - now
                if left <= 0:
                    if self.window_bytes < MIN_PROGRESS:
                        raise LinkError(f"{self.where} sent {self.window_bytes} bytes in {self.timeout:g} s (the "
                                        f"link stalled, or the server is too slow)")
                    self.window_start, self.window_bytes = now, 0
                    left = self.timeout
            self.sock.settimeout(max(left, 0.01))
            try:
                n = self.sock.recv_into(view)
            except TimeoutError:
                continue  # the deadline or the window's end: judged at the top of the loop
            except OSError as e:
                raise (self.explain and self.explain(e)) or LinkError(f"the connection to {self.where} broke: "
                                                                      f"{e.strerror or e}") from e
            self.window_bytes += n
            self.received += n
            return n

    def _fill(self, deadline: float | None = None) -> int:
        block = bytearray(16 << 10)
        n = self._recv_into(memoryview(block), deadline)
        self.buf += block[:n]
        return n

    def read_head(self) -> tuple[int, str, str, dict[str, str]]:
        """The status line and headers of the next answer, all within `timeout` seconds."""
        deadline = time.monotonic() + self.timeout
        cut = -1
        while cut < 0 and len(self.buf) <= MAX_HEAD:
            crlf, lf = self.buf.find(b"\r\n\r\n"), self.buf.find(b"\n\n")
            ends = [x for x in (crlf + 4 if crlf >= 0 else -1, lf + 2 if lf >= 0 else -1) if x >= 0]
            if ends:
                cut = min(ends)
                break
            if self._fill(deadline) == 0:
                if self.buf:
                    raise LinkError(f"{self.where} closed the connection in the middle of its answer's header")
                raise LinkError(f"{self.where} closed the connection without an answer", stale=True)
        if cut < 0 or cut > MAX_HEAD:
            raise ProtocolError(f"{self.where} sent a header of more than {MAX_HEAD >> 10} KiB without an end (not a "
                                f"file server's answer)")
        head = bytes(self.buf[:cut])
        del self.buf[:cut]
        self.window_start, self.window_bytes = time.monotonic(), 0  # the body's progress window starts now
        return parse_head(head, self.where)

    def readinto(self, view: memoryview) -> int:
        """Up to len(view) bytes (0: the peer closed the connection)."""
        if self.buf:
            n = min(len(view), len(self.buf))
            view[:n] = self.buf[:n]
            del self.buf[:n]
            return n
        return self._recv_into(view)

    def readline(self, limit: int) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > limit:
                raise ProtocolError(f"{self.where} sent a line of more than {limit} bytes in a chunked body")
            if self._fill() == 0:
                raise LinkError(f"the connection to {self.where} ended inside a chunked body")


def parse_head(head: bytes, where: str) -> tuple[int, str, str, dict[str, str]]:
    """(status, reason, version, headers by lower-case name; repeated ones joined with ", ")."""
    lines = head.decode("latin-1").split("\n")
    first = lines[0].rstrip("\r")
    parts = first.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ProtocolError(f"{where} is not an HTTP server (it answered {first[:60]!r})")
    headers: dict[str, str] = {}
    for n, raw in enumerate(lines[1:]):
        line = raw.rstrip("\r")
        if not line:
            continue
        if n >= MAX_HEADERS:
            raise ProtocolError(f"{where} sent more than {MAX_HEADERS} header lines")
        if line[0] in " \t":
            raise ProtocolError(f"{where} sent a folded header line (obsolete in HTTP/1.1)")
        key, colon, value = line.partition(":")
        if not colon or not key or key != key.strip():
            raise ProtocolError(f"{where} sent a malformed header line {line[:60]!r}")
        key, value = key.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), parts[2].strip() if len(parts) > 2 else "", parts[0], headers


class Response:
    """An answer whose head has been read; its body is read with readinto() and must be read to its end
    (or the connection closed: done()) before the connection serves another request."""

    def __init__(self, conn: Connection, status: int, reason: str, version: str, headers: dict[str, str]) -> None:
        self.conn, self.status, self.reason, self.headers = conn, status, reason, headers
        self.reader = conn.reader
        assert self.reader is not None
        self.chunked = False
        self.length: int | None = None  # of the body, when the server said it
        self.left: int | None = None  # of the body (of the current chunk when chunked)
        self.ended = False
        encoding = headers.get("transfer-encoding", "").lower()
        if status in (204, 304):
            self.left = self.length = 0
        elif encoding:
            if [c.strip() for c in encoding.split(",")] != ["chunked"]:
                raise self._fail(ProtocolError(f"{conn.where} sent a body coded as {encoding!r}; bankctl reads only "
                                               f"plain and chunked bodies"))
            self.chunked, self.left = True, 0
        elif "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}
            value = values.pop() if len(values) == 1 else ""
            if not value.isdigit():
                raise self._fail(ProtocolError(f"{conn.where} sent a bad Content-Length "
                                               f"{headers['content-length']!r}"))
            self.length = self.left = int(value)
        connection = headers.get("connection", "").lower()
        self.keep_alive = ("close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
                           and (self.chunked or self.length is not None))
        if self.left == 0 and not self.chunked:
            self._end()

    def _fail(self, err: NetError) -> NetError:
        self.conn.close()
        return err

    def _end(self) -> None:
        self.ended = True
        if not self.keep_alive:
            self.conn.close()

    def readinto(self, view: memoryview) -> int:
        """Body bytes into `view`; 0 at the end of the body. A body that ends before its announced length
        is a LinkError (the connection is closed)."""
        if self.ended:
            return 0
        assert self.reader is not None
        if self.chunked and self.left == 0:
            self._next_chunk()
            if self.ended:
                return 0
        want = len(view) if self.left is None else min(len(view), self.left)
        try:
            n = self.reader.readinto(view[:want])
        except NetError:
            self.conn.close()
            raise
        if n == 0:
            if self.left is None:  # delimited by the end of the connection
                self._end()
                return 0
            self.conn.close()
            raise LinkError(f"the connection to {self.conn.where} ended {self.left} bytes before the end of the "
                            f"answer's body")
        if self.left is not None:
            self.left -= n
            if self.left == 0 and not self.chunked:
                self._end()
        return n

    def _next_chunk(self) -> None:
        assert self.reader is not None
        try:
            if self.length is not None and self.reader.readline(2).strip():  # the CRLF after a chunk's data
                raise ProtocolError(f"{self.conn.where} sent a chunk longer than its size line said")
            line = self.reader.readline(1024)
            size = line.split(b";", 1)[0].strip()
            if not size or not all(c in b"0123456789abcdefABCDEF" for c in size) or len(size) > 15:
                raise ProtocolError(f"{self.conn.where} sent a bad chunk size line {line[:40]!r}")
            self.left = int(size, 16)
            self.length = (self.length or 0) + self.left
            if self.left == 0:
                while self.reader.readline(8192).strip():  # trailers
                    pass
                self._end()
        except NetError:
            self.conn.close()
            raise

    def read_some(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body (for an error page: what the server said)."""
        out = bytearray()
        block = bytearray(min(limit, 16 << 10) or 1)
        while len(out) < limit and (n := self.readinto(memoryview(block)[:limit - len(out)])):
            out += block[:n]
        return bytes(out)

    def done(self, drain: int = 64 << 10) -> None:
        """Finished with this answer: what is left of a short body is read so the connection can be
        reused; a long one closes the connection instead."""
        if self.ended:
            return
        if self.left is not None and not self.chunked and self.left <= drain:
            try:
                self.read_some(self.left)
                return
            except NetError:
                pass
        self.conn.close()
        self.ended = True


def error_text(resp: Response) -> str:
    """What an error page says, shortened: its HTML title, or its first line of text."""
    try:
        body = resp.read_some(4096).decode("utf-8", "replace")
    except NetError:
        return ""
    low = body.lower()
    start, end = low.find("<title>"), low.find("</title>")
    if 0 <= start < end:
        text = body[start + 7:end]
    elif "<" in body[:1] or "xml" in low[:60]:
        code, msg = low.find("<code>"), low.find("<message>")
        text = body[code + 6:low.find("</code>")] if code >= 0 else ""
        if msg >= 0:
            text += ": " + body[msg + 9:low.find("</message>")]
    else:
        text = body.strip().split("\n", 1)[0] if body.strip() else ""
    return " ".join(text.split())[:160]
