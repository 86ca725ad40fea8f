"""A small file fetched whole in one GET (a channel document): conditional on the ETag of the copy the
device holds (`If-None-Match`), so a fleet that has nothing new costs each server one short answer per poll.

The request goes through the same transport as a stage (transport.RemoteFile: the connection, proxies, TLS,
redirects to another host, the status errors, the headers of Settings), and a failure a retry may help
(a cut link, a timeout, a 5xx) is retried with the same backoff. The answers:

    200  the file; its ETag is kept for the next request
    304  not modified: the copy the device holds is still the file (only sent when an ETag was given)
    204  no content: the server has nothing for this device (a server that decides per device)

A body over `limit` bytes is refused without being read (TooLarge): a 10 MB answer is not a channel
document, whatever the URL says."""

from __future__ import annotations

import time

from overlay_layout.net.errors import NetError, ProtocolError, TooLarge
from overlay_layout.net.transport import BACKOFF_CAP, REDIRECTS, RemoteFile, Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from overlay_layout.net.url import Url


class Fetched:
    """An answer: `status` (200, 204 or 304), `body`, `etag` (of a 200), the URL it came from in the end,
    and what it cost (`requests`, `received` bytes, heads included)."""

    __slots__ = ("body", "etag", "received", "requests", "status", "url")

    def __init__(self, status: int, body: bytes, etag: str | None, url: Url, requests: int, received: int) -> None:
        self.status, self.body, self.etag, self.url = status, body, etag, url
        self.requests, self.received = requests, received


def fetch_document(url: str, settings: Settings, etag: str | None, limit: int) -> Fetched:
    """GET `url` whole (see the module's docstring); NetError for anything else, UrlError at once for a
    malformed URL."""
    remote = RemoteFile(url, settings)
    failures = 0
    try:
        while True:
            try:
                status, body, tag = _get(remote, etag, limit)
                return Fetched(status, body, tag, remote.location, remote.requests, remote.received)
            except NetError as e:
                if not e.transient:
                    raise
                failures += 1
                if failures > settings.retries:
                    if settings.retries:
                        e.args = (f"{e} (gave up after {settings.retries} retries)",)
                    raise
                pause = min(BACKOFF_CAP, 2.0 ** (failures - 1))
                settings.say(f"{e}; retrying in {pause:g} s ({failures} of {settings.retries})")
                time.sleep(pause)
    finally:
        remote.close()


def _get(remote: RemoteFile, etag: str | None, limit: int) -> tuple[int, bytes, str | None]:
    remote.location = remote.url
    seen = [remote.url]
    while True:
        resp = remote._request(remote.location, [("If-None-Match", etag)] if etag else [])
        status = resp.status
        if status in REDIRECTS and resp.headers.get("location"):
            resp.done()
            seen.append(remote._redirect(resp.headers["location"], seen))
            continue
        if status == 304 and etag is None:
            resp.done()
            raise ProtocolError(f"{remote.url.display}: the server answered 304 Not Modified to a request that "
                                f"named no copy (no If-None-Match)")
        if status in (204, 304):
            resp.done()
            return status, b"", None
        if status != 200:
            raise remote._status_error(resp)
        if resp.length is not None and resp.length > limit:
            resp.done(0)
            raise TooLarge(f"{remote.url.display}: the server sends {resp.length / 1e6:.1f} MB; this file is at most "
                           f"{limit >> 10} KiB (is the URL that of a bank file?)")
        body = resp.read_some(limit + 1)
        if len(body) > limit:
            resp.done(0)
            raise TooLarge(f"{remote.url.display}: the server sends more than {limit >> 10} KiB; this file is at most "
                           f"that (is the URL that of a bank file?)")
        resp.done()
        return 200, body, resp.headers.get("etag") or None
