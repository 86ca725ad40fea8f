"""The network stage's pure parts: URLs, proxy rules, answer heads and bodies (over a socket pair), the
plan of which chunks share a request, the TLS piece's format, and the errors' types."""

from __future__ import annotations

import socket
import threading

import pytest

from overlay_layout.net.download import Download, Stats
from overlay_layout.net.errors import LinkError, ProtocolError, UrlError
from overlay_layout.net.http import Connection, Limits, Reader, parse_head
from overlay_layout.net.proxy import bypassed, proxy_for
from overlay_layout.net.tlspiece import PieceError, digest, pack, unpack
from overlay_layout.net.url import parse_url


@pytest.mark.parametrize("text, host, port, target", [
    ("http://example.org", "example.org", 80, "/"),
    ("HTTPS://Example.org:8443/a/b.bank?X-Amz-Signature=ab%2Fc&x=1#frag", "Example.org", 8443,
     "/a/b.bank?X-Amz-Signature=ab%2Fc&x=1"),
    ("http://[::1]:8080/a.bank", "::1", 8080, "/a.bank"),
    ("https://[fe80::1%25eth0]/a", "fe80::1%eth0", 443, "/a"),
    ("http://10.0.2.2:8080?q", "10.0.2.2", 8080, "/?q"),
    ("http://host:/x", "host", 80, "/x"),
])
def test_urls_parse(text: str, host: str, port: int, target: str) -> None:
    url = parse_url(text)
    assert (url.host, url.port, url.target) == (host, port, target)


@pytest.mark.parametrize("text, why", [
    ("http://[::1", "opened with \\[ is never closed"),
    ("http://[::1]x/", "after the IPv6 address"),
    ("http://[::g]/", "is not an IPv6 address"),
    ("http://::1/", "more than one colon"),
    ("http://host:99999/", "port '99999' is not a number from 1 to 65535"),
    ("http://host:8o/", "port '8o'"),
    ("http:///a.bank", "no host name"),
    ("http://ex ample.org/", "is not a host name"),
    ("http://example.org/a b", "space or a control character"),
    ("http://bücher.de/", "not ASCII .*xn--"),
    ("http://1.2.3.999/", "is not an IPv4 address"),
    ("ftp://example.org/a", "scheme 'ftp'"),
    ("example.org/a.bank", "no scheme"),
    ("http://example.org/%zz", "not followed by two hex digits"),
    ("http://host]/", "a \\] without the \\["),
])
def test_malformed_urls_are_refused_naming_the_fault(text: str, why: str) -> None:
    with pytest.raises(UrlError, match=why) as e:
        parse_url(text)
    assert not e.value.transient


def test_userinfo_redirects_and_display() -> None:
    url = parse_url("https://dev%40fleet:s3cr%3At@updates.example/v1/a.bank?sig=x")
    assert (url.user, url.password) == ("dev@fleet", "s3cr:t")
    assert "s3cr" not in str(url) and url.display == "https://updates.example/v1/a.bank?…"
    assert str(url.join("b.bank")) == "https://updates.example/v1/b.bank"
    assert str(url.join("/c?d=1#x")) == "https://updates.example/c?d=1"
    assert str(url.join("?e")) == "https://updates.example/v1/a.bank?e"
    assert str(url.join("//cdn.example:8443/f")) == "https://cdn.example:8443/f"
    assert str(url.join("http://[::1]:81/g")) == "http://[::1]:81/g"
    assert parse_url("http://[::1]:80/").authority == "[::1]"


def test_proxies_as_curl_reads_them() -> None:
    http, https = parse_url("http://updates.example/a"), parse_url("https://updates.example/a")
    assert proxy_for(http, {"HTTP_PROXY": "p:3128"}) is None  # upper case is ignored for http, as curl does
    assert proxy_for(http, {"http_proxy": "p:3128"}).authority == "p:3128"
    assert proxy_for(https, {"HTTPS_PROXY": "http://u:pw@p"}).port == 1080  # curl's default proxy port
    assert proxy_for(https, {"http_proxy": "p:3128"}) is None
    assert proxy_for(https, {"all_proxy": "[::1]:3128"}).host == "::1"
    assert proxy_for(https, {"https_proxy": "p:1", "no_proxy": "example"}) is None
    assert proxy_for(https, {"https_proxy": "p:1", "NO_PROXY": "*"}) is None
    with pytest.raises(UrlError, match="over TLS"):
        proxy_for(https, {"https_proxy": "https://p:443"})
    with pytest.raises(UrlError, match="socks5:// proxies are not supported"):
        proxy_for(https, {"https_proxy": "socks5://p:1080"})


@pytest.mark.parametrize("host, rule, hit", [
    ("updates.example", "updates.example", True), ("a.updates.example", "updates.example", True),
    ("a.updates.example", ".updates.example", True), ("badupdates.example", "updates.example", False),
    ("10.1.2.3", "10.0.0.0/8", True), ("11.1.2.3", "10.0.0.0/8", False), ("10.0.2.2", "10.0.2.2", True),
    ("fd00::5", "fd00::/8", True), ("fe80::5", "fd00::/8", False), ("::1", "[::1]", True),
    ("host", " other , host ", True), ("host", "", False),
])
def test_no_proxy(host: str, rule: str, hit: bool) -> None:
    assert bypassed(host, rule) is hit


def test_answer_heads() -> None:
    status, reason, version, headers = parse_head(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/2\r\n"
                                                  b"Set-A: 1\r\nset-a: 2\r\n\r\n", "s")
    assert (status, reason, version, headers["set-a"]) == (206, "Partial Content", "HTTP/1.1", "1, 2")
    with pytest.raises(ProtocolError, match="not an HTTP server"):
        parse_head(b"SSH-2.0-OpenSSH\r\n\r\n", "s")
    with pytest.raises(ProtocolError, match="folded"):
        parse_head(b"HTTP/1.1 200 OK\r\nA: 1\r\n  2\r\n\r\n", "s")


def _serve(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """A socket pair: the far end reads one request and sends `answer`."""
    near, far = socket.socketpair()

    def run() -> None:
        far.recv(65536)
        far.sendall(answer)
        far.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return near, t


def _request(answer: bytes, timeout: float = 2.0) -> tuple[bytes, bool]:
    near, t = _serve(answer)
    conn = Connection(parse_url("http://h/"), Limits(timeout=timeout))
    conn.sock, conn.reader = near, Reader(near, timeout, "h")
    resp = conn.request(parse_url("http://h/x"), [])
    body = resp.read_some(1 << 20)
    t.join()
    return body, resp.keep_alive


def test_bodies_by_length_by_chunks_and_by_close() -> None:
    assert _request(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello") == (b"hello", True)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nT: 1\r\n\r\n"
    assert _request(chunked) == (b"hello!", True)
    assert _request(b"HTTP/1.0 200 OK\r\n\r\nuntil close") == (b"until close", False)
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert _request(interim + b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok") == (b"ok", False)


def test_broken_bodies_and_heads_are_errors_of_their_kind() -> None:
    with pytest.raises(LinkError, match="ended 5 bytes before the end") as e:
        _request(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    assert e.value.transient
    with pytest.raises(ProtocolError, match="without an end") as p:
        _request(b"HTTP/1.1 200 OK\r\n" + b"X-Endless: " + b"a" * (70 << 10))
    assert not p.value.transient
    with pytest.raises(ProtocolError, match="bad Content-Length"):
        _request(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello")
    with pytest.raises(ProtocolError, match="coded as 'gzip'"):
        _request(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")


def test_a_stalled_answer_times_out() -> None:
    near, far = socket.socketpair()
    conn = Connection(parse_url("http://h/"), Limits(timeout=0.3))
    conn.sock, conn.reader = near, Reader(near, 0.3, "h")
    with pytest.raises(LinkError, match="did not send its answer's header within 0.3 s"):
        conn.request(parse_url("http://h/x"), [])
    far.close()


class _Remote:
    def __init__(self) -> None:
        self.say = print


def test_which_chunks_share_a_request() -> None:
    index = [(10 << 10, bytes([n]) * 32) for n in range(20)]
    have = {index[n][1]: ("f", 0, 0) for n in (2, 3, 4, 5, 6, 7, 8, 12, 13)}  # a long gap, then a short one
    plan = Download(_Remote(), Stats(), None, False, 32 << 10)  # type: ignore[arg-type]
    assert plan._run(index, 0, have) == (2, 20 << 10)  # 70 KiB held after chunk 1: too far
    assert plan._run(index, 9, have) == (20, 110 << 10)  # 20 KiB held in between: fetched too
    assert Download(_Remote(), Stats(), None, False, 0)._run(index, 9, have) == (12, 30 << 10)  # type: ignore[arg-type]


def test_the_tls_piece_opens_only_when_its_sha256_is_the_kits() -> None:
    piece = pack([("libcrypto.so.3", b"c" * 100), ("_ssl.cpython-311-x.so", b"s")], "arm64", "3.11.2")
    header, files = unpack(piece, digest(piece), "p")
    assert header["arch"] == "arm64" and files == [("libcrypto.so.3", b"c" * 100), ("_ssl.cpython-311-x.so", b"s")]
    with pytest.raises(PieceError, match="not the TLS piece this bankctl was built with"):
        unpack(piece[:-1] + b"x", digest(piece), "p")
