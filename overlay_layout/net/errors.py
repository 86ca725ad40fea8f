"""The network stage's errors. Each says whether trying again may help (`transient`), so callers decide
by type, never by the words of a message: a cut link or a timeout is transient (the same command resumes),
a malformed URL, an unknown CA or a 404 is not."""

from __future__ import annotations

from overlay_layout.errors import BankbootError


class NetError(BankbootError):
    """Something between this device and the file on the server went wrong."""

    transient = False


class UrlError(NetError):
    """The URL (or a proxy's, or a redirect's) is malformed or not one bankctl can fetch."""


class ConnectError(NetError):
    """No connection: name resolution, refused, unreachable, connect timeout."""

    transient = True


class LinkError(NetError):
    """The connection broke, stalled or timed out during a request. `stale`: a kept-alive connection the
    server had closed before this request got a byte of answer (retried at once on a new connection)."""

    transient = True

    def __init__(self, message: str, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


class TlsError(NetError):
    """The TLS handshake failed for a reason a retry does not change (`why`: unknown-ca, hostname, expired,
    not-yet-valid, client-cert-refused, no-tls, protocol)."""

    def __init__(self, message: str, why: str = "protocol") -> None:
        super().__init__(message)
        self.why = why


class HttpStatus(NetError):
    """The server answered with a status that is not the file: 4xx (permanent) or 5xx/408/429 (transient)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.transient = status >= 500 or status in (408, 429)


class ProtocolError(NetError):
    """The server's answer is not what HTTP or the request allows (a wrong Content-Range, a header without
    end, a body longer than announced): a server bug or a proxy in the way; retrying asks the same server."""


class FileChanged(NetError):
    """The file on the server is not the one this download started with (its ETag, size or date changed):
    the download starts again with the new file, it never mixes the two."""

    transient = True


class RangesRefused(NetError):
    """The server does not serve byte ranges and sending the whole file would cost far more than what is
    missing (the message says what the server did and how to go on)."""


class TooLarge(NetError):
    """A small file (a channel document) whose answer is bigger than the reader's limit: not that file."""
