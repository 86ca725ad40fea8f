"""URLs for `bankctl stage`: parsed and checked once, so a malformed one is refused at once with what is
wrong with it (an unclosed bracket, a bad port, a space) instead of becoming a host that cannot be
reached. Only what a fetch needs: scheme (http, https), user and password (sent as Basic auth), host (a
name, an IPv4 address or a bracketed IPv6 literal, with a zone as %25eth0), port, and the request target
(path and query, kept byte for byte: a presigned S3 URL's signature covers them); a #fragment is dropped.

Host names must be ASCII (the xn-- form of an international name): the frozen program carries no IDNA
codec, and a name the resolver would mangle is better refused here."""

from __future__ import annotations

import socket

from overlay_layout.net.errors import UrlError

DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_HEX = frozenset("0123456789abcdefABCDEF")


class Url:
    """One parsed URL. `str()` gives it back without the password; `display` also hides the query (a
    presigned URL's signature does not belong in logs)."""

    __slots__ = ("host", "password", "port", "scheme", "target", "user")

    def __init__(self, scheme: str, host: str, port: int, target: str, user: str | None = None,
                 password: str | None = None) -> None:
        self.scheme, self.host, self.port, self.target = scheme, host, port, target
        self.user, self.password = user, password

    @property
    def authority(self) -> str:
        """host[:port] as the Host header and an absolute URL write it (the port only when not the default)."""
        host = f"[{self.host.replace('%', '%25')}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host.lower(), self.port

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def display(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}{'?…' if '?' in self.target else ''}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"

    def __repr__(self) -> str:
        return f"Url({self.display!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Url) and (self.origin, self.target) == (other.origin, other.target)

    def __hash__(self) -> int:
        return hash((self.origin, self.target))

    def join(self, location: str) -> Url:
        """Where a redirect's Location points, taken relative to this URL (RFC 3986 section 5.2, without
        dot-segment removal: the server's own path is sent back as it gave it)."""
        location = location.strip()
        if not location:
            raise UrlError(f"{self.display}: a redirect without a Location")
        scheme, sep, _ = location.partition(":")
        if sep and scheme and scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme):
            return parse_url(location)
        if location.startswith("//"):
            return parse_url(f"{self.scheme}:{location}")
        location = location.partition("#")[0]
        if location.startswith("/"):
            target = location
        elif location.startswith("?"):
            target = self.path + location
        else:
            target = self.path.rpartition("/")[0] + "/" + location
        _check_target(target, location)
        return Url(self.scheme, self.host, self.port, target, self.user, self.password)


def parse_url(text: str) -> Url:
    """The URL in `text`; UrlError names what is wrong with it."""
    def bad(what: str) -> UrlError:
        return _bad(text, what)

    scheme, sep, rest = text.partition("://")
    if not sep:
        raise bad("no scheme (it must start with http:// or https://)")
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise bad(f"the scheme {scheme!r} is not one bankctl fetches (http or https)")
    rest = rest.partition("#")[0]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:cut], rest[cut:]
    if target.startswith("?") or not target:
        target = "/" + target
    _check_target(target, text)
    user = password = None
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
        name, colon, secret = userinfo.partition(":")
        user, password = _unquote(name, text), _unquote(secret, text) if colon else ""
    host, port = _split_host_port(authority, scheme, text)
    return Url(scheme, host, port, target, user, password)


def _bad(text: str, what: str) -> UrlError:
    return UrlError(f"{text!r} is not a valid URL: {what}")


def _split_host_port(authority: str, scheme: str, text: str) -> tuple[str, int]:
    def fail(what: str) -> UrlError:
        return _bad(text, what)

    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise fail("an IPv6 address opened with [ is never closed with ]")
        literal, tail = authority[1:end], authority[end + 1:]
        address, pct, zone = literal.partition("%")
        if pct:
            zone = zone.removeprefix("25")
            if not zone or not zone.isascii() or not all(c.isalnum() or c in "-_." for c in zone):
                raise fail(f"the IPv6 zone in [{literal}] is not an interface name")
        try:
            socket.inet_pton(socket.AF_INET6, address)
        except (OSError, ValueError):
            raise fail(f"[{literal}] is not an IPv6 address") from None
        host = address + (f"%{zone}" if pct else "")
        if tail and not tail.startswith(":"):
            raise fail(f"{tail!r} after the IPv6 address (only :port may follow)")
        port_text = tail[1:]
    else:
        if "]" in authority:
            raise fail("a ] without the [ that opens an IPv6 address")
        host, _, port_text = authority.partition(":")
        if ":" in port_text:
            raise fail(f"{authority!r} has more than one colon (an IPv6 address goes in brackets: "
                       f"http://[::1]:8080/)")
        if not host:
            raise fail("no host name")
        if not host.isascii():
            raise fail(f"the host name {host!r} is not ASCII (write an international name in its xn-- form)")
        if not set(host) <= _NAME_CHARS or len(host) > 253 or any(not 0 < len(p) <= 63 for p in
                                                                    host.rstrip(".").split(".")):
            raise fail(f"{host!r} is not a host name")
        if host.replace(".", "").isdigit():
            try:
                socket.inet_pton(socket.AF_INET, host)
            except OSError:
                raise fail(f"{host!r} is not an IPv4 address") from None
    if port_text == "":
        return host, DEFAULT_PORTS[scheme]
    if not port_text.isdigit() or not port_text.isascii() or not 0 < int(port_text) < 65536:
        raise fail(f"the port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _check_target(target: str, text: str) -> None:
    for c in target:
        if c <= " " or c == "\x7f":
            raise UrlError(f"{text!r} is not a valid URL: it holds a space or a control character (write it as "
                           f"%20 or %XX)")
        if not c.isascii():
            raise UrlError(f"{text!r} is not a valid URL: {c!r} is not ASCII (percent-encode it)")
    i = target.find("%")
    while i >= 0:
        if not set(target[i + 1:i + 3]) <= _HEX or len(target[i + 1:i + 3]) < 2:
            raise UrlError(f"{text!r} is not a valid URL: a % not followed by two hex digits")
        i = target.find("%", i + 1)


def _unquote(part: str, text: str) -> str:
    """Percent-decoding of a user name or password (UTF-8)."""
    out = bytearray()
    i = 0
    while i < len(part):
        if part[i] == "%":
            pair = part[i + 1:i + 3]
            if len(pair) < 2 or not set(pair) <= _HEX:
                raise UrlError(f"{text!r} is not a valid URL: a % not followed by two hex digits")
            out.append(int(pair, 16))
            i += 3
        else:
            out += part[i].encode()
            i += 1
    return out.decode("utf-8", "replace")
