"""`bankboot publish` into a directory and into a real S3 store (SeaweedFS's gateway, builder/lab/s3store.py):
idempotent, refusing what would break devices, and cut (SIGKILL, no clean-up code runs) at every step
without ever leaving a channel document that points at a file that is not all there; the next publish
finishes the job. A device polls the S3 channel and stages from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.lab.s3store import ACCESS, SECRET, SeaweedS3
from builder.publish import KILL_AT, PublishError, publish
from overlay_layout import ed25519
from overlay_layout.bankfile import BankFile
from overlay_layout.layout import MANIFEST
from overlay_layout.net.channel import Channel, manifest_digest, parse_document
from overlay_layout.trust import key_id
from tests.fleet import BOARD, Release, make_device, poll

STEPS = ("bank-partial", "bank-written", "document-partial")


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
    return Release(tmp_path_factory.mktemp("release"), size=20 << 20)  # a multipart upload to S3


def channel_of(raw: bytes | None, release: Release) -> Channel | None:
    if raw is None:
        return None
    public = ed25519.keypair(release.seed)[0]
    return parse_document(raw, "published", {key_id(public): public}, False)


def bankboot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=Path(__file__).parents[2], timeout=300)


def consistent(ch: Channel | None, read: callable) -> None:
    """The document (if any) names a bank that is all there: its size and its manifest's sha256."""
    if ch is None:
        return
    data = read(ch.bank)
    assert data is not None and len(data) == ch.size, ch.bank
    path = Path("/tmp") / f"bank-{os.getpid()}"
    path.write_bytes(data)
    try:
        with BankFile(str(path)) as bank:
            m = bank.members[MANIFEST]
            assert manifest_digest(os.pread(bank.fd, m.size, m.offset)) == ch.manifest
    finally:
        path.unlink()


def test_publish_into_a_directory_is_idempotent_and_refuses_what_would_break_devices(release: Release,
                                                                                     tmp_path: Path) -> None:
    www = tmp_path / "www"
    first = publish(release.banks["1.0.0"], "stable", str(www), release.key, [BOARD], expires=86400 * 10)
    bank = www / "banks" / f"{release.ids['1.0.0']}.bank"
    doc, stat = (www / "stable.json").read_bytes(), bank.stat()
    assert any("stable -> 1.0.0" in line for line in first.lines)
    again = publish(release.banks["1.0.0"], "stable", str(www), release.key, [BOARD], expires=86400 * 10)
    assert "is there already" in again.lines[0] and "unchanged" in again.lines[1]
    assert (www / "stable.json").read_bytes() == doc and bank.stat().st_ino == stat.st_ino
    later = publish(release.banks["1.0.0"], "stable", str(www), release.key, [BOARD], expires=86400 * 10,
                    now=channel_of(doc, release).published + 6 * 86400)  # past half its validity: renewed
    assert "expires" in later.lines[1] and (www / "stable.json").read_bytes() != doc
    before = {p: p.read_bytes() for p in www.rglob("*") if p.is_file()}
    damaged = tmp_path / "damaged.bank"
    data = bytearray(release.banks["1.1.0"].read_bytes())
    data[len(data) // 2] ^= 1
    damaged.write_bytes(data)
    other_id = tmp_path / "same-id.bank"
    other_id.write_bytes(release.banks["1.1.0"].read_bytes())
    (www / "banks" / f"{release.ids['1.1.0']}.bank").write_bytes(b"someone else's file")
    for args, message in [((damaged, "stable", [BOARD]), "does not match its manifest"),
                          ((release.banks["1.1.0"], "stable", ["qemu-x86_64"]), "is an amd64 board; .* is an arm64"),
                          ((release.banks["1.1.0"], "stable", ["no-such-board"]), "--board no-such-board"),
                          ((release.banks["1.1.0"], "stable", []), "--board: name the board"),
                          ((release.banks["1.1.0"], "sta ble", [BOARD]), "is not a name"),
                          ((other_id, "stable", [BOARD]), "exists with other content")]:
        with pytest.raises(PublishError, match=message):
            publish(args[0], args[1], str(www), release.key, args[2])
    (www / "banks" / f"{release.ids['1.1.0']}.bank").unlink()
    assert {p: p.read_bytes() for p in www.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("step", STEPS)
def test_a_publish_cut_at_any_step_never_points_at_a_missing_file(step: str, release: Release, tmp_path: Path) -> None:
    www = tmp_path / "www"
    publish(release.banks["1.0.0"], "stable", str(www), release.key, [BOARD])
    args = ("publish", str(release.banks["1.1.0"]), str(www), "--channel", "stable", "--sign", str(release.key),
            "--board", BOARD)
    cut = bankboot(*args, env={KILL_AT: step})
    assert cut.returncode == -9, cut.stderr
    ch = channel_of((www / "stable.json").read_bytes(), release)
    assert ch is not None and ch.version == "1.0.0"  # every step before the document's rename: the old one
    consistent(ch, lambda rel: (www / rel).read_bytes() if (www / rel).is_file() else None)
    done = bankboot(*args)
    assert done.returncode == 0, done.stderr
    ch = channel_of((www / "stable.json").read_bytes(), release)
    assert ch is not None and ch.version == "1.1.0"
    consistent(ch, lambda rel: (www / rel).read_bytes())
    assert not [p for p in www.rglob("*") if ".tmp-" in p.name], list(www.rglob("*"))
    if step != "bank-written":
        assert "left by a cut publish" in done.stdout, done.stdout


@pytest.fixture(scope="module")
def s3():
    with SeaweedS3() as store:
        store.public_bucket("fleet")
        yield store


def s3_read(s3: SeaweedS3, prefix: str):
    def read(rel: str) -> bytes | None:
        try:
            return s3.client.get_object(Bucket="fleet", Key=f"{prefix}/{rel}")["Body"].read()
        except s3.client.exceptions.NoSuchKey:
            return None
    return read


def test_publish_to_s3_and_a_device_polls_it(s3: SeaweedS3, release: Release, tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    endpoint = f"http://127.0.0.1:{s3.port}"
    args = ("--channel", "stable", "--sign", str(release.key), "--board", BOARD, "--endpoint-url", endpoint)
    out = bankboot("publish", str(release.banks["1.0.0"]), "s3://fleet/releases", *args, env=env)
    assert out.returncode == 0 and f"bankctl poll {endpoint}/fleet/releases/stable.json" in out.stdout, out
    url = s3.url("fleet", "releases/stable.json")
    dev = make_device(tmp_path / "dev", release)
    assert poll(dev, url).action == "nothing"
    head = s3.client.head_object(Bucket="fleet", Key="releases/stable.json")
    assert head["CacheControl"] == "no-cache" and head["ContentType"] == "application/json"
    cut = bankboot("publish", str(release.banks["1.1.0"]), "s3://fleet/releases", *args, env={**env, KILL_AT:
                                                                                              "bank-partial"})
    assert cut.returncode == -9
    ch = channel_of(s3_read(s3, "releases")("stable.json"), release)
    assert ch is not None and ch.version == "1.0.0"
    assert s3_read(s3, "releases")(f"banks/{release.ids['1.1.0']}.bank") is None  # an unfinished upload is no object
    assert s3.client.list_multipart_uploads(Bucket="fleet", Prefix="releases/banks/").get("Uploads")
    assert poll(dev, url).requests == 1  # 304: nothing new for the device
    out = bankboot("publish", str(release.banks["1.1.0"]), "s3://fleet/releases", *args, env=env)
    assert out.returncode == 0 and "removed an unfinished upload" in out.stdout, out
    assert not s3.client.list_multipart_uploads(Bucket="fleet", Prefix="releases/banks/").get("Uploads")
    consistent(channel_of(s3_read(s3, "releases")("stable.json"), release), s3_read(s3, "releases"))
    said: list[str] = []
    got = poll(dev, url, said)
    assert got.action == "staged" and dev.banks.layout.pointer("next") == release.ids["1.1.0"], said
    head = s3.client.head_object(Bucket="fleet", Key=f"releases/banks/{release.ids['1.1.0']}.bank")
    assert head["Metadata"]["sha256"] and "immutable" in head["CacheControl"]
    again = bankboot("publish", str(release.banks["1.1.0"]), "s3://fleet/releases", *args, env=env)
    assert "is there already" in again.stdout and "unchanged" in again.stdout, again
    assert json.loads(s3_read(s3, "releases")("stable.json"))["version"] == "1.1.0"
