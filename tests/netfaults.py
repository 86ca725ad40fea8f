"""Small servers the network tests put in front of real ones, on loopback: a fault proxy that forwards each
request to a real server (nginx) and breaks its answer in one chosen way, and a forward proxy (CONNECT and
absolute-form requests, as squid or tinyproxy do) that records what went through it."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable


def read_head(sock: socket.socket, buf: bytearray) -> bytes | None:
    """One HTTP head from `sock` (bytes after it stay in `buf`); None at the end of the connection."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    return head


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def replace_header(head: bytes, name: str, value: str) -> bytes:
    lines = head.decode("latin-1").split("\r\n")
    out = [lines[0]] + [ln for ln in lines[1:] if ln.partition(":")[0].strip().lower() != name.lower() and ln]
    return ("\r\n".join([*out, f"{name}: {value}"]) + "\r\n\r\n").encode("latin-1")


class _Threaded(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultProxy:
    """Forwards each request of a client connection to `upstream` (host, port) over a connection of its own
    and hands the answer to `fault(request head, answer head, upstream socket, client socket, state)`,
    which sends whatever it likes to the client and returns False to close the client's connection.
    `plain` is the fault that breaks nothing. Use as a context manager; `url(path)`."""

    def __init__(self, upstream: tuple[str, int], fault: Callable[..., bool] | None = None) -> None:
        self.upstream, self.fault = upstream, fault or self.plain
        self.state: dict[str, object] = {"requests": 0, "body_sent": 0}
        self.lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        self.server = _Threaded(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        try:
            while True:
                head = read_head(client, buf)
                if head is None:
                    return
                with self.lock:
                    self.state["requests"] = int(self.state["requests"]) + 1  # type: ignore[call-overload]
                with socket.create_connection(self.upstream) as up:
                    up.sendall(replace_header(head, "Connection", "close"))
                    ubuf = bytearray()
                    answer = read_head(up, ubuf)
                    if answer is None:
                        return
                    if not self.fault(head, answer, _Prefixed(up, ubuf), client, self.state):
                        return
        except OSError:
            return
        finally:
            client.close()

    @staticmethod
    def plain(request: bytes, answer: bytes, up: _Prefixed, client: socket.socket, state: dict) -> bool:
        """Forward the answer untouched (keeping the client's connection open)."""
        client.sendall(replace_header(answer, "Connection", "keep-alive"))
        pump(up, client, state)
        return True


class _Prefixed:
    """An upstream socket with what was read past the answer's head put back in front."""

    def __init__(self, sock: socket.socket, buf: bytearray) -> None:
        self.sock, self.buf = sock, buf

    def recv(self, n: int) -> bytes:
        if self.buf:
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        return self.sock.recv(n)


def pump(up: _Prefixed, client: socket.socket, state: dict, limit: int | None = None, rate: float | None = None) -> int:
    """Copy the answer's body to the client: all of it, or `limit` bytes; `rate` bytes per second."""
    sent = 0
    while limit is None or sent < limit:
        want = 1 if rate else 65536
        if limit is not None:
            want = min(want, limit - sent)
        data = up.recv(want)
        if not data:
            break
        client.sendall(data)
        sent += len(data)
        state["body_sent"] += len(data)
        if rate:
            time.sleep(len(data) / rate)
    return sent


class ForwardProxy:
    """An HTTP proxy: CONNECT tunnels and absolute-form GETs, each request line recorded in `seen`."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        self.server = _Threaded(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def __enter__(self) -> ForwardProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        try:
            while (head := read_head(client, buf)) is not None:
                method, target, _ = head.decode("latin-1").split("\r\n")[0].split(" ", 2)
                self.seen.append(f"{method} {target}")
                if method == "CONNECT":
                    host, _, port = target.rpartition(":")
                    up = socket.create_connection((host.strip("[]"), int(port)))
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    if buf:
                        up.sendall(bytes(buf))
                    _splice(client, up)
                    return
                rest = target.partition("://")[2]
                hostport, _, path = rest.partition("/")
                host, _, port = hostport.rpartition(":")
                with socket.create_connection((host.strip("[]"), int(port or 80))) as up:
                    first = head.decode("latin-1").split("\r\n", 1)
                    up.sendall(replace_header(f"{method} /{path} HTTP/1.1\r\n{first[1]}".encode("latin-1"),
                                              "Connection", "close"))
                    while data := up.recv(65536):
                        client.sendall(data)
                return
        except OSError:
            return
        finally:
            client.close()


def _splice(a: socket.socket, b: socket.socket) -> None:
    def copy(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    t = threading.Thread(target=copy, args=(b, a), daemon=True)
    t.start()
    copy(a, b)
    t.join()
    b.close()
