"""Bearer tokens for a container registry's blob URL (`bankctl stage https://HOST/v2/NAME/blobs/DIGEST`,
a bank `bankboot publish --oci` pushed), as the OCI distribution spec's token authentication has them:

- **A token from a file** (`--token-file`): sent as `Authorization: Bearer ...` from the first request. A
  registry that refuses it is an error naming the file (a token is not asked for again behind the user's
  back: they gave the one meant).
- **An anonymous pull** otherwise: a registry that wants a token answers 401 with `WWW-Authenticate:
  Bearer realm=...,service=...,scope=...`; the token is fetched from that realm without credentials (as
  `docker pull` does for a public image) and the request made again. Such tokens expire within minutes,
  so a 401 later in a long download fetches a new one, once per request.

The token goes only to the origin of the URL given, never to where a redirect points (a registry sends
blob reads to its storage, a presigned S3 or CDN URL whose own query authorises it, and which a stray
Authorization header would make refuse the request)."""

from __future__ import annotations

from overlay_layout import jsontext
from overlay_layout.net.errors import NetError, ProtocolError, UrlError
from overlay_layout.net.url import Url, parse_url

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MAX_TOKEN = 64 << 10  # a token service's answer (JSON with one token; Docker Hub's are about 1.5 KiB)
_UNRESERVED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")


class TokenError(NetError):
    """No token to read a registry's blob with: the file is unreadable or refused, the token service says
    no. Never transient: the same command gets the same answer."""


def read_token(path: str) -> str:
    """The bearer token in `path` (surrounding white space dropped, as `echo TOKEN > file` leaves a newline)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN + 1)
    except OSError as e:
        raise TokenError(f"--token-file {path}: cannot read it ({e.strerror or e})") from e
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenError(f"--token-file {path}: not a token (a bearer token is ASCII text)") from None
    if not token or len(data) > MAX_TOKEN or any(c.isspace() or not c.isprintable() for c in token):
        raise TokenError(f"--token-file {path}: not a token (one line of printable text without spaces, at "
                         f"most {MAX_TOKEN >> 10} KiB)")
    return token


def parse_challenge(header: str) -> dict[str, str] | None:
    """The parameters of a `Bearer` challenge in a WWW-Authenticate header (RFC 6750), or None when it
    offers no Bearer scheme. Quoted values may hold commas (scope="repository:a:pull,push")."""
    text = header.strip()
    if text[:7].lower() != "bearer " and text.lower() != "bearer":
        return None
    params: dict[str, str] = {}
    i, n = 7, len(text)
    while i < n:
        while i < n and text[i] in " ,":
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            break
        key = text[i:eq].strip().lower()
        i = eq + 1
        if i < n and text[i] == '"':
            value, i = "", i + 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value += text[i]
                i += 1
            i += 1
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            value, i = text[i:end].strip(), end
        params[key] = value
    return params


def _quote(value: str) -> str:
    return "".join(c if c in _UNRESERVED else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def token_url(challenge: dict[str, str], where: str) -> Url:
    """The token service's URL for this challenge: its realm with service= and scope= as query."""
    realm = challenge.get("realm", "")
    if not realm:
        raise ProtocolError(f"{where} asked for a bearer token without saying where to get one (no realm)")
    query = "&".join(f"{k}={_quote(challenge[k])}" for k in ("service", "scope") if challenge.get(k))
    try:
        url = parse_url(realm + (("&" if "?" in realm else "?") + query if query else ""))
    except UrlError as e:
        raise ProtocolError(f"{where} named a malformed token service {realm!r}: {e}") from e
    return url


def parse_token(body: bytes, where: str) -> str:
    """The token in a token service's answer ({"token": ...} or OAuth2's {"access_token": ...})."""
    try:
        data = jsontext.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        data = None
    token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise ProtocolError(f"{where}: the token service's answer holds no token")
    return token


class BearerAuth:
    """Authorization for one URL's origin (see the module's docstring). `fetch(url)` GETs a token
    service's URL and returns (status, body); RemoteFile gives it its own connection settings."""

    __slots__ = ("anonymous", "origin", "token", "token_file")

    def __init__(self, token_file: str | None = None) -> None:
        self.token_file = token_file
        self.token = read_token(token_file) if token_file else None
        self.anonymous = token_file is None  # tokens come from the registry's token service
        self.origin: tuple[str, str, int] | None = None

    def bind(self, url: Url) -> None:
        self.origin = url.origin

    def headers(self, url: Url) -> list[tuple[str, str]]:
        if self.token and url.user is None and url.origin == self.origin:
            return [("Authorization", f"Bearer {self.token}")]
        return []

    def answer(self, url: Url, challenge_header: str, fetch: Callable[[Url], tuple[int, bytes]]) -> bool:
        """A 401 from `url`: True when a new token was fetched and the request should be made again; False
        when this is no bearer challenge to answer (the caller reports the 401). TokenError when the token
        was given and refused, or the token service refuses an anonymous one."""
        if url.origin != self.origin:
            return False
        challenge = parse_challenge(challenge_header)
        if challenge is None:
            return False
        if not self.anonymous:
            raise TokenError(f"{url.display}: the registry refused the bearer token in {self.token_file} (HTTP 401"
                             f"{': ' + challenge['error'] if challenge.get('error') else ''}): it may have expired "
                             f"or not grant pull of this repository")
        where = url.display
        service = token_url(challenge, where)
        status, body = fetch(service)
        if status != 200:
            scope = challenge.get("scope", "")
            raise TokenError(f"{where}: the registry's token service {service.display} gives no anonymous token "
                             f"(HTTP {status}){' for ' + scope if scope else ''}: the repository is not public; "
                             f"give a token with --token-file FILE")
        self.token = parse_token(body, service.display)
        return True

