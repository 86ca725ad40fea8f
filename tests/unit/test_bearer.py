"""Bearer tokens for a registry's blob URL (overlay_layout/net/bearer.py): challenges as registries write
them, the token service's URL, and a token that never leaves the origin it was given for."""

from __future__ import annotations

import pytest

from overlay_layout.net.bearer import BearerAuth, TokenError, parse_challenge, parse_token, token_url
from overlay_layout.net.errors import ProtocolError
from overlay_layout.net.url import parse_url

HUB = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull"'


def test_challenges_as_registries_send_them() -> None:
    assert parse_challenge(HUB) == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                                    "scope": "repository:library/x:pull"}
    # Quoted commas, escapes, unquoted values, upper-case scheme.
    assert parse_challenge('BEARER realm=http://a/t, scope="repository:a/b:pull,push",error="x\\"y"') == \
        {"realm": "http://a/t", "scope": "repository:a/b:pull,push", "error": 'x"y'}
    assert parse_challenge('Basic realm="registry"') is None and parse_challenge("") is None


def test_the_token_service_url_and_its_answer() -> None:
    url = token_url(parse_challenge(HUB) or {}, "x")
    assert str(url) == "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fx%3Apull"
    with pytest.raises(ProtocolError, match="no realm"):
        token_url({"service": "s"}, "x")
    with pytest.raises(ProtocolError, match="malformed token service"):
        token_url({"realm": "ftp://x"}, "x")
    assert parse_token(b'{"token": "abc", "expires_in": 300}', "x") == "abc"
    assert parse_token(b'{"access_token": "def"}', "x") == "def"
    for bad in (b"<html>", b'{"token": ""}', b'{"token": 3}', b"[]"):
        with pytest.raises(ProtocolError, match="holds no token"):
            parse_token(bad, "x")


def test_a_token_goes_only_to_the_origin_it_was_given_for(tmp_path) -> None:
    f = tmp_path / "token"
    f.write_text("secret-token\n")
    auth = BearerAuth(str(f))
    auth.bind(parse_url("https://registry.example/v2/a/blobs/sha256:00"))
    assert auth.headers(parse_url("https://registry.example/v2/a/blobs/sha256:00")) == \
        [("Authorization", "Bearer secret-token")]
    assert auth.headers(parse_url("https://storage.example/blob?X-Amz-Signature=1")) == []  # a redirect's host
    assert auth.headers(parse_url("http://registry.example/v2/a")) == []  # not over plain http of the same host
    assert auth.headers(parse_url("https://u:p@registry.example/v2/a")) == []  # basic auth was given there
    # A given token that is refused is an error naming its file, not a token fetched behind the user's back.
    with pytest.raises(TokenError, match=f"refused the bearer token in {f}"):
        auth.answer(parse_url("https://registry.example/v2/a"), HUB, lambda _url: (200, b'{"token": "t"}'))
    # An anonymous one fetches a token, once asked; a 401 that is not a bearer challenge is left to the caller.
    anon = BearerAuth()
    anon.bind(parse_url("https://registry.example/v2/a"))
    asked = []
    assert anon.answer(parse_url("https://registry.example/v2/a"), HUB,
                       lambda url: asked.append(str(url)) or (200, b'{"token": "t1"}'))
    assert anon.token == "t1" and asked[0].startswith("https://auth.docker.io/token?service=")
    assert not anon.answer(parse_url("https://registry.example/v2/a"), 'Basic realm="x"', lambda _url: (200, b""))
    assert not anon.answer(parse_url("https://cdn.example/x"), HUB, lambda _url: (200, b""))
    with pytest.raises(TokenError, match="gives no anonymous token"):
        anon.answer(parse_url("https://registry.example/v2/a"), HUB, lambda _url: (401, b""))
