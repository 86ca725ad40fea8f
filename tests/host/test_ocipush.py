"""`bankboot publish --oci` into Debian's docker-registry on loopback, and `bankctl stage` reading the bank
back by range from the blob URL it prints: from an open registry, from one that wants bearer tokens (an
anonymous pull through the token service, or a token from a file), and the errors a person meets."""

from __future__ import annotations

import json
import os
import random
import urllib.request
from pathlib import Path

import pytest

from builder.ocipush import ARTIFACT_TYPE, LAYER_TYPE, OciPushError, publish_oci
from overlay_layout.net.bearer import BearerAuth, TokenError
from overlay_layout.net.download import DownloadError, stage_url
from overlay_layout.net.transport import Settings
from overlay_layout.state import Banks
from tests.banks import DEV, install_first_image, make_bank
from tests.registry import Registry
from tests.tokens import TokenService

REPO = "banks/dev"


def payload(seed: int, size: int = 3 << 20) -> bytes:
    return random.Random(seed).randbytes(size)


def stage(tmp_path: Path, url: str, token_file: Path | None = None, name: str = "banks"):
    install_first_image(tmp_path / name)
    banks = Banks(str(tmp_path / name))
    settings = Settings(retries=1, environ={}, auth=BearerAuth(str(token_file) if token_file else None))
    manifest, stats = stage_url(banks, url, DEV, "9.9.9", machine="x86_64", settings=settings)
    return banks, manifest, stats


def nothing_staged(tmp_path: Path, name: str) -> bool:
    overlay = tmp_path / name / "overlay"
    return Banks(str(tmp_path / name)).layout.pointer("next") is None and \
        not [n for n in os.listdir(overlay) if n.startswith(".download-")]


def test_a_published_bank_is_staged_from_its_blob_url(tmp_path: Path) -> None:
    bank = tmp_path / "a.bank"
    image = make_bank(bank, "2.0.0+build.7", payload(1), chunked=True)
    with Registry(tmp_path / "registry") as reg:
        p = publish_oci(bank, f"docker://{reg.host}/{REPO}", plain_http=True)
        assert p.ref == f"{reg.host}/{REPO}:2.0.0_build.7" and p.image_id == image
        # The registry holds an artifact: its manifest digest is the one printed, its one layer the bank.
        req = urllib.request.Request(f"http://{reg.host}/v2/{REPO}/manifests/2.0.0_build.7",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        with urllib.request.urlopen(req) as answer:
            raw, digest = answer.read(), answer.headers["Docker-Content-Digest"]
        assert p.pinned == f"{reg.host}/{REPO}@{digest}"
        manifest = json.loads(raw)
        assert manifest["artifactType"] == ARTIFACT_TYPE and [layer["mediaType"] for layer in manifest["layers"]] \
            == [LAYER_TYPE] and manifest["layers"][0]["size"] == bank.stat().st_size
        # Pushed again (another tag): the same manifest, byte for byte.
        assert publish_oci(bank, f"{reg.host}/{REPO}:again", plain_http=True).pinned == p.pinned
        banks, m, stats = stage(tmp_path, p.blob_url)
        assert m["id"] == image and banks.layout.pointer("next") == image
        assert Path(banks.layout.squashfs(image)).read_bytes()[4:] == payload(1)
        assert stats.network == m["size"]  # by range: the squashfs once, nothing else twice
        with pytest.raises(DownloadError, match=r"not found \(HTTP 404"):
            stage(tmp_path, p.blob_url[:-8] + "00000000", name="banks404")
        assert nothing_staged(tmp_path, "banks404")


def test_a_registry_that_wants_tokens(tmp_path: Path) -> None:
    bank = tmp_path / "a.bank"
    image = make_bank(bank, "3.0.0", payload(2), chunked=True)
    with TokenService(tmp_path / "tokens", public=True) as tokens, \
            Registry(tmp_path / "registry", token_auth=tokens.registry_auth()) as reg:
        push = tmp_path / "push.token"
        push.write_text(tokens.mint(REPO, ["pull", "push"]) + "\n")
        with pytest.raises(OciPushError, match="pushing .* to "):
            publish_oci(bank, f"{reg.host}/{REPO}:nope", plain_http=True)  # anonymous tokens never push
        p = publish_oci(bank, f"{reg.host}/{REPO}", token_file=push, plain_http=True)
        # An anonymous pull: the registry's 401 names the token service, which gives a pull token.
        asked = len(tokens.asked)
        banks, m, _ = stage(tmp_path, p.blob_url, name="anonymous")
        assert m["id"] == image and banks.layout.pointer("next") == image
        assert tokens.asked[asked:] == [{"service": "bankboot-test-registry", "scope": f"repository:{REPO}:pull"}]
        # A token from a file: no token service asked.
        pull = tmp_path / "pull.token"
        pull.write_text(tokens.mint(REPO, ["pull"]))
        asked = len(tokens.asked)
        banks, m, _ = stage(tmp_path, p.blob_url, token_file=pull, name="token")
        assert banks.layout.pointer("next") == image and len(tokens.asked) == asked
        # A token for another repository is refused, and says which file held it.
        other = tmp_path / "other.token"
        other.write_text(tokens.mint("banks/other", ["pull"]))
        with pytest.raises(DownloadError, match=f"refused the bearer token in {other}"):
            stage(tmp_path, p.blob_url, token_file=other, name="other")
        assert nothing_staged(tmp_path, "other")
        # A repository that is not public: no anonymous token, and the message says what to give.
        tokens.public = False
        with pytest.raises(DownloadError, match="gives no anonymous token .*--token-file"):
            stage(tmp_path, p.blob_url, name="private")
        assert nothing_staged(tmp_path, "private")


def test_bad_publish_and_token_inputs_are_named(tmp_path: Path) -> None:
    bank = tmp_path / "a.bank"
    make_bank(bank, "1.0.0", payload(3, 1 << 16))
    with pytest.raises(OciPushError, match="name the registry"):
        publish_oci(bank, "banks/dev:1")
    with pytest.raises(OciPushError, match="a digest names content already pushed"):
        publish_oci(bank, "127.0.0.1:1/banks/dev@sha256:" + "0" * 64)
    with pytest.raises(OciPushError, match="must be lower case"):
        publish_oci(bank, "127.0.0.1:1/Banks/dev")
    (tmp_path / "junk").write_bytes(b"not a bank" * 100)
    with pytest.raises(OciPushError, match="not a bank file"):
        publish_oci(tmp_path / "junk", "127.0.0.1:1/banks/dev")
    with pytest.raises(OciPushError, match="nothing answers|connection refused|pushing"):
        publish_oci(bank, "127.0.0.1:1/banks/dev", plain_http=True)
    for text, why in [("", "not a token"), ("two words", "not a token"), ("\xff", "not a token")]:
        f = tmp_path / "t"
        f.write_bytes(text.encode("latin-1"))
        with pytest.raises(TokenError, match=why):
            BearerAuth(str(f))
    with pytest.raises(TokenError, match="cannot read it"):
        BearerAuth(str(tmp_path / "missing"))
