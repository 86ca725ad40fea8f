"""A file on a server, read by byte ranges over one kept-alive connection (`RemoteFile`).

- **Ranges.** One range per request, never several (servers answer multi-range requests with the whole
  file, refuse them, or send multipart bodies). The first answer tells whether the server does ranges: a
  206 with the Content-Range asked for. A 200 (the whole file), a 416 for a range inside the file or a
  501 mean it does not: the file is then read as one stream from its start, and every later read that
  lies ahead of the stream's position continues in it (the caller decides whether that costs too much:
  `ranges`, `refusal`).
- **The same file throughout.** The first answer's ETag (or Last-Modified) goes into If-Range on every
  later request, and every answer's ETag, size and date are compared with the first's: a file replaced on
  the server mid-download raises FileChanged, never mixes two versions.
- **Redirects** (301, 302, 303, 307, 308), to another host too (a CDN, a presigned S3 URL), at most
  MAX_REDIRECTS, loops named; later requests go straight to where the last redirect pointed, and back to
  the URL given if that place stops answering (an expired presigned URL). https never redirects to http.
- **Retries.** A transient NetError (a broken or stalled link, a timeout, a 5xx) is retried with backoff
  (1, 2, 4 ... 30 s), at most `retries` times in a row, each retry going on after the last byte the caller
  got; a kept-alive connection the server had closed is reopened at once without counting."""

from __future__ import annotations

import os
import time

from overlay_layout.net.bearer import MAX_TOKEN, BearerAuth
from overlay_layout.net.errors import FileChanged, HttpStatus, LinkError, NetError, ProtocolError, UrlError
from overlay_layout.net.http import Connection, Limits, Response, error_text
from overlay_layout.net.proxy import proxy_for
from overlay_layout.net.tls import Tls, TlsOptions
from overlay_layout.net.url import Url, parse_url

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

MAX_REDIRECTS = 10
BACKOFF_CAP = 30.0
RESET_AFTER = 64 << 10  # a retry that brought this much starts the count of failures in a row again
BLOCK = 256 << 10
REDIRECTS = (301, 302, 303, 307, 308)


class Settings:
    """How a stage talks to the network: time limits, retries, TLS, the environment proxies are read from,
    `say` for a line a person should see (a retry, a server without ranges), and `headers` sent with every
    request (what `bankctl poll` tells a fleet's servers about the device, initfs/identity.py)."""

    __slots__ = ("auth", "environ", "headers", "limits", "retries", "say", "tls")

    def __init__(self, connect_timeout: float = 10.0, timeout: float = 20.0, retries: int = 5,
                 tls: TlsOptions | None = None, environ: Mapping[str, str] | None = None,
                 say: Callable[[str], None] | None = None, headers: Sequence[tuple[str, str]] = (),
                 auth: BearerAuth | None = None) -> None:
        self.limits = Limits(connect_timeout, timeout)
        self.auth = auth  # bearer tokens for a registry's blob URL (overlay_layout/net/bearer.py)
        self.retries, self.tls = retries, tls or TlsOptions()
        self.environ = os.environ if environ is None else environ
        self.say = say or (lambda _line: None)
        self.headers = list(headers)


class RemoteFile:
    """The file at `url` (UrlError at once when the URL is malformed); see the module's docstring."""

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.url = parse_url(url)
        self.location = self.url  # where the last redirect pointed
        self.settings = settings or Settings()
        self.say = self.settings.say
        self.tls: Tls | None = None
        self.size: int | None = None
        self.etag: str | None = None  # strong ETag of the first answer
        self.modified: str | None = None  # its Last-Modified
        self.ranges: bool | None = None  # whether the server serves ranges (None: not known yet)
        self.refusal = ""  # what a server without ranges did, for messages
        self.conn: Connection | None = None
        self.stream: Response | None = None  # an open whole-file answer (a server without ranges)
        self.stream_at = 0  # the file offset of its next body byte
        self.head = b""  # the file's first bytes, when they came in a whole-file answer (read again from here)
        self.requests = 0
        self.connections = 0
        self._received = 0  # on connections closed for good
        if self.settings.auth is not None:
            self.settings.auth.bind(self.url)

    @property
    def received(self) -> int:
        """Everything that came over the network: heads and bodies, bytes later dropped included."""
        return self._received + (self.conn.received if self.conn else 0)

    def close(self) -> None:
        self.stream = None
        if self.conn is not None:
            self.conn.close()
            self._received += self.conn.received
            self.conn = None

    # -- connections ---------------------------------------------------------------------------------------
    def _connection(self, url: Url) -> Connection:
        proxy = proxy_for(url, self.settings.environ)
        key = (url.origin, proxy.origin if proxy else None)
        conn = self.conn
        if conn is not None and (conn.origin, conn.proxy.origin if conn.proxy else None) == key:
            return conn
        self.close()
        self.conn = Connection(url, self.settings.limits, proxy, self._tls() if url.scheme == "https" else None)
        return self.conn

    def _request(self, url: Url, headers: list[tuple[str, str]], method: str = "GET", body: bytes = b"") -> Response:
        conn = self._connection(url)
        if conn.sock is None:
            self.connections += 1
        headers = [*self.settings.headers, *headers]
        try:
            resp = conn.request(url, headers, method, body)
        except LinkError as e:
            if not e.stale:
                raise
            self.connections += 1  # the server closed it while it idled: a new one, at once
            resp = conn.request(url, headers, method, body)
        self.requests += 1
        return resp

    # -- one answer ------------------------------------------------------------------------------------------
    def _open(self, start: int, end: int | None) -> tuple[Response, int]:
        """An answer holding the file from byte `start` (to `end`, inclusive, where ranges work): (the
        answer, the file offset of its first body byte)."""
        seen = [self.location]
        went_back = asked_token = False
        auth = self.settings.auth
        while True:
            headers = auth.headers(self.location) if auth is not None else []
            ranged = self.ranges is not False
            if ranged:
                headers.append(("Range", f"bytes={start}-{'' if end is None else end}"))
                if self.etag or self.modified:
                    headers.append(("If-Range", self.etag or self.modified or ""))
            resp = self._request(self.location, headers)
            status = resp.status
            if status in REDIRECTS and resp.headers.get("location"):
                resp.done()
                seen.append(self._redirect(resp.headers["location"], seen))
                continue
            if status == 401 and auth is not None and not asked_token and \
                    auth.answer(self.location, resp.headers.get("www-authenticate", ""), self._fetch_token):
                resp.done()  # a registry's blob: a (new) anonymous token, and the same request again
                asked_token = True
                continue
            if status in (401, 403, 404, 410) and self.location != self.url and not went_back:
                resp.done()  # where a redirect pointed no longer answers (an expired presigned URL): ask again
                self.location, went_back, seen = self.url, True, [self.url]
                continue
            if status == 206 and ranged:
                return resp, self._partial(resp, start, end)
            if status == 200:
                self._same_file(resp, resp.length)
                self._learn(resp, resp.length)
                if ranged:
                    self._no_ranges(f"answered `Range: bytes={start}-{'' if end is None else end}` with 200 and "
                                    f"the whole file")
                return resp, 0
            if status == 416 and ranged:
                total = _total(resp.headers.get("content-range", ""))
                resp.done()
                if total is not None and self.size is not None and total != self.size:
                    raise FileChanged(f"{self.url.display}: the file on the server is now {total} bytes, it was "
                                      f"{self.size}")
                if total is not None and start >= total:
                    raise HttpStatus(f"{self.url.display}: the file on the server has {total} bytes, none from byte "
                                     f"{start} on (416): it is shorter than its bank header says", 416)
                self._no_ranges(f"refused `Range: bytes={start}-{'' if end is None else end}` of a "
                                f"{'file of ' + str(total) + ' bytes' if total else 'file'} (416)")
                continue
            if status == 501 and ranged:
                resp.done()
                self._no_ranges("answered a range request with 501 Not Implemented")
                continue
            raise self._status_error(resp)

    def _fetch_token(self, url: Url) -> tuple[int, bytes]:
        """GET a registry's token service (bearer.py): (status, body), on a connection of its own."""
        conn = Connection(url, self.settings.limits, proxy_for(url, self.settings.environ),
                          self._tls() if url.scheme == "https" else None)
        try:
            resp = conn.request(url, [])
            self.requests += 1
            return resp.status, resp.read_some(MAX_TOKEN + 1)
        finally:
            conn.close()
            self._received += conn.received

    def _tls(self) -> Tls:
        if self.tls is None:
            self.tls = Tls(self.settings.tls)
        return self.tls

    def _redirect(self, location: str, seen: list[Url]) -> Url:
        try:
            target = self.location.join(location)
        except UrlError as e:
            raise ProtocolError(f"{self.location.display} redirected to a malformed URL: {e}") from e
        if self.location.scheme == "https" and target.scheme == "http":
            raise UrlError(f"{self.location.display} redirected to plain http ({target.display}): refused (the "
                           f"download would lose TLS); give the http:// URL yourself if that is meant")
        if target in seen:
            loop = " -> ".join(u.display for u in [*seen[seen.index(target):], target])
            raise ProtocolError(f"{self.url.display}: a redirect loop ({loop})")
        if len(seen) > MAX_REDIRECTS:
            raise ProtocolError(f"{self.url.display}: more than {MAX_REDIRECTS} redirects (the last to "
                                f"{target.display})")
        if target.origin == self.url.origin and target.user is None:  # a password stays with its own server
            target.user, target.password = self.url.user, self.url.password
        self.location = target
        return target

    def _no_ranges(self, what: str) -> None:
        if self.ranges is not False:
            self.refusal = what
            self.say(f"the server does not do byte ranges (it {what}): the file is read as one stream from its "
                     f"start")
        self.ranges = False

    def _partial(self, resp: Response, start: int, end: int | None) -> int:
        where = self.url.display
        cr = resp.headers.get("content-range", "")
        first, _, total_text = cr.removeprefix("bytes ").partition("/")
        a, dash, b = first.partition("-")
        if "multipart" in resp.headers.get("content-type", "").lower():
            resp.done(0)
            raise ProtocolError(f"{where}: the server answered one range with several (multipart/byteranges)")
        if not (cr.startswith("bytes ") and dash and a.isdigit() and b.isdigit()) or int(b) < int(a):
            resp.done(0)
            raise ProtocolError(f"{where}: the server answered `Range: bytes={start}-{'' if end is None else end}` "
                                f"with a bad Content-Range {cr!r}")
        if int(a) != start or (end is not None and int(b) > end):
            resp.done(0)
            raise ProtocolError(f"{where}: asked for bytes {start}-{'' if end is None else end}, the server sent "
                                f"bytes {a}-{b} (its Content-Range is wrong)")
        if resp.length is not None and resp.length != int(b) - int(a) + 1:
            resp.done(0)
            raise ProtocolError(f"{where}: Content-Range {cr!r} and Content-Length {resp.length} disagree")
        total = int(total_text) if total_text.isdigit() else None
        self._same_file(resp, total)
        self._learn(resp, total)
        self.ranges = True
        return start

    def _same_file(self, resp: Response, size: int | None) -> None:
        """FileChanged when `resp` is of another version of the file than the first answer was."""
        etag, modified = _strong(resp.headers.get("etag")), resp.headers.get("last-modified")
        change = ""
        if self.etag and etag and etag != self.etag:
            change = f"its ETag went from {self.etag} to {etag}"
        elif self.size is not None and size is not None and size != self.size:
            change = f"its size went from {self.size} to {size} bytes"
        elif self.modified and modified and modified != self.modified and not (self.etag and etag):
            change = f"its date went from {self.modified} to {modified}"
        if change:
            resp.done(0)
            raise FileChanged(f"{self.url.display}: the file on the server changed during the download ({change})")

    def _learn(self, resp: Response, size: int | None) -> None:
        if self.size is None and size is not None:
            self.size = size
        if self.etag is None and self.modified is None:
            self.etag = _strong(resp.headers.get("etag"))
            self.modified = resp.headers.get("last-modified") or None

    def _status_error(self, resp: Response) -> NetError:
        status, url = resp.status, self.location
        text = error_text(resp).removeprefix(str(status)).strip()
        if text.lower() == resp.reason.lower():
            text = ""
        resp.done()
        what = {400: "refused the request", 401: "needs authorisation", 403: "forbidden", 404: "not found",
                410: "gone"}.get(status, "the server answered")
        if status >= 500:
            what = "the server failed"
        hint = ""
        if status == 401 and self.settings.auth is not None and self.settings.auth.anonymous:
            hint = "; a registry's blob: give a bearer token with --token-file FILE"
        elif url.scheme == "https" and status in (400, 401, 403):
            cert = self.settings.tls.cert
            hint = (f"; the server may have refused this device's client certificate {cert}" if cert else
                    "; if the server wants a client certificate, give one with --cert and --key")
        return HttpStatus(f"{url.display}: {what} (HTTP {status}{': ' + text if text else ''}){hint}", status)

    # -- reading ---------------------------------------------------------------------------------------------
    def stream_to(self, offset: int, length: int, sink: Callable[[memoryview], None]) -> None:
        """Hand bytes offset..offset+length to `sink` in order, in blocks, retrying as the module says."""
        done, failures = 0, 0
        if self.ranges is False and offset < len(self.head) and self.stream is not None \
                and self.stream_at == len(self.head):  # what the stream passed already, from memory
            piece = memoryview(self.head)[offset:min(offset + length, len(self.head))]
            sink(piece)
            done = len(piece)
        block = memoryview(bytearray(BLOCK))
        while done < length:
            counted = _Counter(sink)
            try:
                resp, at = self._answer_from(offset + done, offset + length - 1)
                self._pump(resp, at, offset + done, length - done, counted, block)
            except NetError as e:
                if not e.transient or isinstance(e, FileChanged):
                    self.close()
                    raise
                if counted.count >= RESET_AFTER:
                    failures = 0
                failures += 1
                if failures > self.settings.retries:
                    self.close()
                    if self.settings.retries:
                        e.args = (f"{e} (gave up after {self.settings.retries} retries)",)
                    raise
                pause = min(BACKOFF_CAP, 2.0 ** (failures - 1))
                self.say(f"{e}; retrying in {pause:g} s ({failures} of {self.settings.retries}), from byte "
                         f"{offset + done + counted.count}")
                time.sleep(pause)
            else:
                failures = 0 if counted.count else failures
            finally:
                done += counted.count  # what the sink has is never asked for again

    def _answer_from(self, start: int, end: int) -> tuple[Response, int]:
        """The open whole-file stream where it has not passed `start`; else a new request."""
        if self.stream is not None and not self.stream.ended and self.stream_at <= start:
            return self.stream, self.stream_at
        if self.stream is not None:
            self.stream.done(0)  # behind us: only a new request can go back
            self.stream = None
        resp, at = self._open(start, None if self.ranges is False else end)
        if resp.status == 200:
            self.stream, self.stream_at = resp, at
        return resp, at

    def _pump(self, resp: Response, at: int, want_at: int, want: int, sink: Callable[[memoryview], None],
              block: memoryview) -> None:
        """Copy the wanted bytes of an answer's body to `sink`; returns when they are all there or the body
        ended (a range answered shorter than asked: the caller asks for the rest)."""
        skip, got = want_at - at, 0
        while got < want:
            n = resp.readinto(block[:min(BLOCK, skip + want - got) if skip > 0 else min(BLOCK, want - got)])
            if n == 0:
                break
            at += n
            chunk = block[:n]
            if skip > 0:
                drop = min(skip, n)
                skip -= drop
                chunk = chunk[drop:]
            if len(chunk):
                sink(chunk)
                got += len(chunk)
        if resp is self.stream:
            self.stream_at = at
            if resp.ended:
                self.stream = None
                if self.size is None:
                    self.size = at  # a whole-file answer without a length: its end is the file's
        if got < want and (resp.status == 200 or at == self.size):
            raise ProtocolError(f"{self.url.display}: the file ends at byte {at}, before byte {want_at + want} "
                                f"(its bank header says it is longer)")

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        self.stream_to(offset, length, out.extend)
        return bytes(out)

    def read_upto(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`: fewer where the file ends (its size comes with the first
        answer)."""
        if self.size is None:
            out = bytearray()
            try:
                self.stream_to(offset, length, out.extend)
            except ProtocolError:
                if self.size is None or len(out) < min(length, self.size - offset):
                    raise
            data = bytes(out)
        else:
            data = self.read(offset, max(0, min(length, self.size - offset)))
        if offset == 0 and self.ranges is False and self.stream is not None and self.stream_at == len(data):
            self.head = data
        return data

    def cost_from(self, offset: int) -> int:
        """Bytes a server without ranges sends before the stream reaches `offset` and then to the file's
        end: what reading from `offset` on costs from here."""
        size = self.size or 0
        if self.stream is not None and self.stream_at <= offset:
            return size - self.stream_at
        return size


class _Counter:
    """Passes blocks on to a sink and counts them: a retry goes on after the last byte the sink got."""

    def __init__(self, sink: Callable[[memoryview], None]) -> None:
        self.sink, self.count = sink, 0

    def __call__(self, block: memoryview) -> None:
        self.sink(block)
        self.count += len(block)


def _strong(etag: str | None) -> str | None:
    """An ETag usable in If-Range (a weak one, W/"...", is not)."""
    return etag if etag and not etag.startswith("W/") else None


def _total(content_range: str) -> int | None:
    """N of a 416's `bytes */N`."""
    total = content_range.rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


class Window:
    """Bytes base..base+length of a RemoteFile, read as a file of their own: a bank inside a larger artifact
    (a .swu on a rollout server, overlay_layout/net/swu.py) read by range at its offset. Everything but
    positions and the size is the RemoteFile's (its connection, ETag checks, counters)."""

    def __init__(self, remote: RemoteFile, base: int, length: int) -> None:
        self.remote, self.base, self.length = remote, base, length

    def __getattr__(self, name: str) -> object:
        return getattr(self.remote, name)

    @property
    def size(self) -> int:
        return self.length

    def stream_to(self, offset: int, length: int, sink: Callable[[memoryview], None]) -> None:
        self.remote.stream_to(self.base + offset, length, sink)

    def read(self, offset: int, length: int) -> bytes:
        return self.remote.read(self.base + offset, length)

    def read_upto(self, offset: int, length: int) -> bytes:
        return self.remote.read(self.base + offset, max(0, min(length, self.length - offset)))

    def cost_from(self, offset: int) -> int:
        return self.remote.cost_from(self.base + offset)
