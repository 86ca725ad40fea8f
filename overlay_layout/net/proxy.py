"""Which proxy a request goes through, read from the environment the way curl reads it, so a device
configured for curl fetches updates the same way:

- http:// URLs use `http_proxy` (lower case only: an `HTTP_PROXY` can be set by a CGI request's `Proxy:`
  header, so curl ignores it), https:// URLs `https_proxy` or `HTTPS_PROXY`; both fall back to
  `all_proxy` / `ALL_PROXY`.
- `no_proxy` / `NO_PROXY`: a comma-separated list of host names (each also matches its subdomains; a
  leading dot is the same), IP addresses or CIDR ranges (10.0.0.0/8, fd00::/8), or `*` for every host.
- A proxy is `[http://][user:password@]host[:port]` (port 1080 when none is given, as curl's). https://
  URLs go through it with CONNECT (TLS end to end with the server), http:// ones as absolute-form requests.
  Proxies spoken to over TLS (https://) and SOCKS proxies are refused with that reason."""

from __future__ import annotations

import socket

from overlay_layout.net.errors import UrlError
from overlay_layout.net.url import Url, parse_url

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

PROXY_PORT = 1080


def proxy_for(url: Url, environ: Mapping[str, str]) -> Url | None:
    """The proxy for `url`, or None for a direct connection."""
    names = ("http_proxy",) if url.scheme == "http" else ("https_proxy", "HTTPS_PROXY")
    value = next((environ[n] for n in (*names, "all_proxy", "ALL_PROXY") if environ.get(n, "").strip()), "")
    if not value.strip() or bypassed(url.host, environ.get("no_proxy") or environ.get("NO_PROXY") or ""):
        return None
    return parse_proxy(value.strip())


def parse_proxy(value: str) -> Url:
    scheme = value.partition("://")[0].lower() if "://" in value else "http"
    if scheme == "https":
        raise UrlError(f"proxy {value!r}: a proxy spoken to over TLS (https://) is not supported; use an "
                       f"http:// proxy (https:// URLs still go through it encrypted end to end, with CONNECT)")
    if scheme != "http":
        raise UrlError(f"proxy {value!r}: {scheme}:// proxies are not supported (use an http:// proxy)")
    text = value if "://" in value else f"http://{value}"
    try:
        proxy = parse_url(text)
    except UrlError as e:
        raise UrlError(f"the proxy setting {value!r} is not a proxy URL: {e}") from e
    hostport = text.partition("://")[2].partition("/")[0].rpartition("@")[2]
    explicit = "]:" in hostport if hostport.startswith("[") else ":" in hostport
    if not explicit:
        proxy.port = PROXY_PORT
    return proxy


def bypassed(host: str, no_proxy: str) -> bool:
    """Whether `host` is in a no_proxy list (see the module's docstring)."""
    host = host.lower().rstrip(".").partition("%")[0]
    address = _address(host)
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.removeprefix("[").replace("]", "")
        net, slash, bits = entry.partition("/")
        if address is not None and (network := _address(net)) is not None:
            if network[0] != address[0]:
                continue
            width = 32 if address[0] == socket.AF_INET else 128
            n = int(bits) if slash and bits.isdigit() else width
            if n <= width and address[1] >> (width - n) == network[1] >> (width - n):
                return True
            continue
        name = entry.lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _address(text: str) -> tuple[int, int] | None:
    """(family, address as an int) of an IP address literal, None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return family, int.from_bytes(socket.inet_pton(family, text), "big")
        except (OSError, ValueError):
            continue
    return None
