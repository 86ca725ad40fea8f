"""Eclipse hawkBit's Direct Device Integration API, the device side: what `bankctl poll --hawkbit` says to a
rollout server (hawkBit, goosebit, the services built on them) and reads from it. The device's logic (when
to poll, what to stage, what to report) is initfs/hawkbit.py's; this module owns the protocol.

    GET  {base}                               the controller base: polling sleep, _links (deploymentBase,
                                              cancelAction, configData)
    PUT  {base}/configData                    the device's attributes (board, revision, version, ...)
    GET  {deploymentBase href}                the action: id, chunks -> artifacts (size, hashes, download href)
    POST {deploymentBase href}/feedback       proceeding / downloaded / closed success|failure, with details
    GET  {cancelAction href}                  the action the server wants stopped (stopId)
    POST {cancelAction href}/feedback         closed success (cancelled) or rejected (too late)

{base} is URL/TENANT/controller/v1/CONTROLLER_ID. Hrefs are followed as the server gives them (hawkBit adds
query strings; they are opaque). Authorization is `TargetToken <token>` (the device's own) or `GatewayToken
<token>` (the tenant's), sent to the DDI server's origin only: an artifact on another host (a CDN) gets no
token (rauc-hawkbit-updater's default too); one that then refuses the download is an error saying so.

Every request goes over transport.RemoteFile's connection (proxies, TLS, time limits); an answer that is not
JSON (an HTML login page, a proxy's error page) is an error naming the URL, never parsed further."""

from __future__ import annotations

import time

from overlay_layout import jsontext
from overlay_layout.contract import is_name
from overlay_layout.net.bearer import BearerAuth
from overlay_layout.net.errors import HttpStatus, NetError, ProtocolError
from overlay_layout.net.transport import BACKOFF_CAP, RemoteFile, Settings
from overlay_layout.net.url import Url, parse_url

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_JSON = 1 << 20
SCHEMES = ("TargetToken", "GatewayToken")
EXECUTIONS = ("closed", "proceeding", "canceled", "scheduled", "rejected", "resumed", "downloaded", "download")


class DdiError(NetError):
    """The DDI server's answer is not what the API says (not JSON, HTML, a deployment bankctl cannot take)."""


class DdiAuth(BearerAuth):
    """`Authorization: TargetToken|GatewayToken <token>` for the DDI server's origin (bearer.py's rules: the
    token from a file, never sent where a redirect or an artifact href on another host points)."""

    __slots__ = ("scheme",)

    def __init__(self, token_file: str | None, scheme: str = "TargetToken") -> None:
        super().__init__(token_file)
        self.scheme = scheme
        self.anonymous = False

    def bind(self, url: Url) -> None:
        if self.origin is None:  # the DDI server's: an artifact's RemoteFile binds nothing new
            self.origin = url.origin

    def headers(self, url: Url) -> list[tuple[str, str]]:
        if self.token and url.user is None and url.origin == self.origin:
            return [("Authorization", f"{self.scheme} {self.token}")]
        return []

    def answer(self, url: Url, challenge_header: str, fetch: Any) -> bool:
        return False  # a DDI server's 401 means the token: never asked for another behind the user's back


def controller_url(server: str, tenant: str, controller: str) -> str:
    """{server}/{tenant}/controller/v1/{controller}; UrlError for a malformed server URL, DdiError for names."""
    for what, name in (("--tenant", tenant), ("--controller-id", controller)):
        if not is_name(name, 128):
            raise DdiError(f"{what} {name!r} is not a name (letters, digits, . _ + -, at most 128)")
    base = parse_url(server.rstrip("/") + "/")
    return str(base.join(f"{tenant}/controller/v1/{controller}"))


def parse_sleep(text: object, where: str) -> int:
    """Seconds of a polling sleep "HH:MM:SS" (hours may exceed 24)."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 3 or not all(p.isdigit() and len(p) >= 2 for p in parts) or int(parts[1]) > 59 or \
            int(parts[2]) > 59:
        raise DdiError(f"{where}: the polling sleep {text!r} is not HH:MM:SS")
    return int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])


def href(links: object, name: str) -> str | None:
    """_links.<name>.href, or None."""
    link = links.get(name) if isinstance(links, dict) else None
    value = link.get("href") if isinstance(link, dict) else None
    return value if isinstance(value, str) and value else None


class Artifact:
    """The one artifact of a deployment bankctl takes: file name, size, hashes, download URL."""

    __slots__ = ("filename", "hashes", "size", "url")

    def __init__(self, filename: str, size: int, hashes: dict[str, str], url: str) -> None:
        self.filename, self.size, self.hashes, self.url = filename, size, hashes, url


class Deployment:
    """A deploymentBase answer: the action id, its download/update modes (forced, attempt, skip), the
    chunk's version and name and its artifact."""

    __slots__ = ("action", "artifact", "download", "name", "update", "version", "window")

    def __init__(self, action: str, download: str, update: str, version: str, name: str, artifact: Artifact,
                 window: str | None = None) -> None:
        self.action, self.download, self.update = action, download, update
        self.version, self.name, self.artifact, self.window = version, name, artifact, window

    @property
    def install_now(self) -> bool:
        """False for a download-only action (update: skip) or outside its maintenance window."""
        return self.update != "skip" and self.window != "unavailable"


def parse_deployment(doc: object, where: str) -> Deployment:
    """The deployment in a deploymentBase answer; DdiError naming what bankctl cannot take."""
    if not isinstance(doc, dict) or not isinstance(doc.get("deployment"), dict):
        raise DdiError(f"{where}: no deployment in the answer (the action was withdrawn?)")
    action = doc.get("id")
    if not isinstance(action, (str, int)) or isinstance(action, bool) or not str(action):
        raise DdiError(f"{where}: the deployment has no action id")
    dep = doc["deployment"]
    modes = [dep.get(k, "forced") for k in ("download", "update")]
    if any(m not in ("forced", "attempt", "skip") for m in modes):
        raise DdiError(f"{where}: download/update must be forced, attempt or skip, not {modes}")
    chunks = dep.get("chunks")
    if not isinstance(chunks, list) or len(chunks) != 1:
        raise DdiError(f"{where}: the deployment has {len(chunks) if isinstance(chunks, list) else 'no'} chunks; "
                       f"bankctl takes exactly one (one bank per software module)")
    chunk = chunks[0]
    arts = chunk.get("artifacts") if isinstance(chunk, dict) else None
    if not isinstance(arts, list) or len(arts) != 1 or not isinstance(arts[0], dict):
        raise DdiError(f"{where}: the deployment's chunk has {len(arts) if isinstance(arts, list) else 'no'} "
                       f"artifacts; bankctl takes exactly one (the .swu bankboot publish --format swu writes)")
    art = arts[0]
    links = art.get("_links")
    url = href(links, "download") or href(links, "download-http")
    size, filename, hashes = art.get("size"), art.get("filename"), art.get("hashes")
    if url is None or not isinstance(size, int) or isinstance(size, bool) or size <= 0 or not isinstance(filename, str):
        raise DdiError(f"{where}: the artifact lacks a download link, a size or a file name")
    version, name = chunk.get("version"), chunk.get("name")
    if not isinstance(version, str) or not version:
        raise DdiError(f"{where}: the deployment's chunk names no version")
    good = {k: v for k, v in hashes.items() if isinstance(v, str)} if isinstance(hashes, dict) else {}
    window = dep.get("maintenanceWindow")
    if window is not None and window not in ("available", "unavailable"):
        raise DdiError(f"{where}: maintenanceWindow must be available or unavailable, not {window!r}")
    return Deployment(str(action), modes[0], modes[1], version, name if isinstance(name, str) else filename,
                      Artifact(filename, size, good, url), window)


def feedback(action: str, execution: str, finished: str, details: list[str],
             progress: tuple[int, int] | None = None) -> dict[str, Any]:
    """A feedback body (hawkBit's; goosebit requires `result.finished` even while proceeding)."""
    assert execution in EXECUTIONS and finished in ("success", "failure", "none")
    result: dict[str, Any] = {"finished": finished}
    if progress is not None:
        result["progress"] = {"cnt": progress[0], "of": progress[1]}
    return {"id": action, "time": time.strftime("%Y%m%dT%H%M%S", time.gmtime()),
            "status": {"execution": execution, "result": result, "details": [d[:1000] for d in details]}}


class Client:
    """Requests to one DDI server over one kept-alive connection (see the module's docstring)."""

    def __init__(self, base: str, settings: Settings) -> None:
        self.base = base
        self.settings = settings
        self.remote = RemoteFile(base, settings)
        self.requests = 0
        self.received = 0

    def close(self) -> None:
        self.remote.close()

    def counted(self) -> tuple[int, int]:
        return self.remote.requests, self.remote.received

    def get(self, url: str) -> Any:
        return self._call("GET", url, None)

    def put(self, url: str, body: object) -> Any:
        return self._call("PUT", url, body)

    def post(self, url: str, body: object) -> Any:
        return self._call("POST", url, body)

    def _call(self, method: str, url: str, body: object) -> Any:
        """The JSON answer to one request, retried with backoff while a retry may help (a 5xx, a cut link)."""
        target = self.remote.url.join(url)
        data = jsontext.dumps(body).encode() if body is not None else b""
        failures = 0
        while True:
            try:
                return self._once(method, target, data)
            except NetError as e:
                if not e.transient:
                    raise
                failures += 1
                if failures > self.settings.retries:
                    if self.settings.retries:
                        e.args = (f"{e} (gave up after {self.settings.retries} retries)",)
                    raise
                pause = min(BACKOFF_CAP, 2.0 ** (failures - 1))
                self.settings.say(f"{e}; retrying in {pause:g} s ({failures} of {self.settings.retries})")
                time.sleep(pause)

    def _once(self, method: str, url: Url, data: bytes) -> Any:
        remote = self.remote
        auth = self.settings.auth
        headers = auth.headers(url) if auth is not None else []
        headers.append(("Accept", "application/json"))
        if method != "GET":
            headers.append(("Content-Type", "application/json"))
        remote.location = url  # for _status_error's messages
        resp = remote._request(url, headers, method, data)
        where = f"{method} {url.display}"
        if resp.status in (401, 403):
            detail = _detail(resp.read_some(4096))
            resp.done()
            token = auth.token_file if isinstance(auth, DdiAuth) else None
            scheme = auth.scheme if isinstance(auth, DdiAuth) else "TargetToken"
            hint = (f"the {scheme} in {token} is not the one the server holds for this device (or the tenant's "
                    f"gateway token)" if token else "the server wants a token: give --token-file FILE (a target "
                                                   "token, or a gateway token with --gateway-token)")
            raise HttpStatus(f"{where}: the DDI server refused this device (HTTP {resp.status}"
                             f"{': ' + detail if detail else ''}): {hint}", resp.status)
        if resp.status != 200:
            raise remote._status_error(resp)
        if resp.length is not None and resp.length > MAX_JSON:
            resp.done(0)
            raise DdiError(f"{where}: the server sends {resp.length / 1e6:.1f} MB; a DDI answer is well under "
                           f"{MAX_JSON >> 20} MiB")
        raw = resp.read_some(MAX_JSON + 1)
        resp.done()
        kind = resp.headers.get("content-type", "").lower()
        head = raw[:512].lstrip().lower()
        if "html" in kind or head.startswith((b"<!doctype", b"<html", b"<head", b"<body")):
            raise DdiError(f"{where}: an HTML page, not DDI JSON (a login page or a proxy's error page? check the "
                           f"server URL and --tenant)")
        if len(raw) > MAX_JSON:
            raise DdiError(f"{where}: the answer is over {MAX_JSON >> 20} MiB: not a DDI answer")
        if not raw.strip():
            return None
        try:
            return jsontext.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise DdiError(f"{where}: not JSON ({str(e)[:80]}): is this a hawkBit DDI server?") from e


def _detail(raw: bytes) -> str:
    try:
        doc = jsontext.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return " ".join(raw.decode("utf-8", "replace").split())[:160]
    text = doc.get("detail") or doc.get("message") or doc.get("error") if isinstance(doc, dict) else None
    return str(text)[:160] if text else ""


__all__ = ["Client", "DdiAuth", "DdiError", "Deployment", "ProtocolError", "controller_url", "feedback",
           "href", "parse_deployment", "parse_sleep"]
