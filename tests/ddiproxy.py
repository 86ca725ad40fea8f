"""A fault proxy in front of a real DDI server (goosebit) for the hawkBit tests: every request goes to the
server with the proxy's own Host header (so the server's hrefs point at the proxy), and `fault(request)`
may answer instead (a 500, an HTML page), change the answer (a polling sleep of 0 s or a year, a
cancelAction link goosebit never offers), cut a download after some bytes, or serve hawkBit's cancelAction
endpoints goosebit lacks. Every request is logged (method, path, status, the JSON body sent)."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
from collections.abc import Callable


class Request:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body

    def json(self) -> object:
        return json.loads(self.body) if self.body else None


class Answer:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, cut_after: int | None = None) -> None:
        self.status, self.headers, self.body, self.cut_after = status, headers, body, cut_after


class DdiProxy:
    """`with DdiProxy(upstream_port) as p:` p.url; p.fault(req) -> Answer|None before the server,
    p.change(req, answer) -> Answer after it; p.log: [(method, path, status, json body)]."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.fault: Callable[[Request], Answer | None] = lambda r: None
        self.change: Callable[[Request, Answer], Answer] = lambda r, a: a
        self.log: list[tuple[str, str, int, object]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                              self.rfile.read(length) if length else b"")
                ans = proxy.fault(req)
                if ans is None:
                    ans = proxy.change(req, proxy.forward(req))
                try:
                    body = req.json()
                except ValueError:
                    body = None
                proxy.log.append((req.method, req.path, ans.status, body))
                self.send_response(ans.status)
                for k, v in ans.headers:
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(ans.body)))
                if ans.cut_after is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(ans.body if ans.cut_after is None else ans.body[:ans.cut_after])
                self.wfile.flush()
                if ans.cut_after is not None:
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_HEAD = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def forward(self, req: Request) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in req.headers.items() if k not in ("connection", "content-length")}
            headers["host"] = f"127.0.0.1:{self.port}"
            conn.request(req.method, req.path, body=req.body or None, headers=headers)
            resp = conn.getresponse()
            return Answer(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()

    def __enter__(self) -> DdiProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def json_answer(obj: object, status: int = 200) -> Answer:
    return Answer(status, [("Content-Type", "application/json")], json.dumps(obj).encode())
