"""`bankboot image --from SOURCE` from every kind of source, against real tools: the sample rootfs as a
tarball (plain, gzip, zstd), as a one-layer OCI image made by umoci, saved as docker-archive and oci-archive
files by skopeo and pushed to a loopback registry (Debian's docker-registry). Every route gives the same
bank; every bad source is a clear error and leaves no file behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder.image import ImageError, build_image
from builder.lab.samplerootfs import build_sample_rootfs
from tests.images import CREATED_EPOCH, oci_image, save_as, tar_directory
from tests.registry import Registry


@pytest.fixture(scope="module")
def sources(aarch64, tmp_path_factory) -> dict[str, str]:
    """The same root filesystem as every kind of source: kind -> SOURCE."""
    board, _, _ = aarch64
    d = tmp_path_factory.mktemp("sources")
    rootfs = build_sample_rootfs(board.arch, d / "rootfs", version="3.0.0")
    tar = tar_directory(rootfs, d / "rootfs.tar")
    subprocess.run(["gzip", "-knq", str(tar)], check=True)
    subprocess.run(["zstd", "-kq", str(tar)], check=True)
    ref = oci_image(d / "oci", "sample", [tar])
    return {"tarball": str(tar), "tar.gz": f"{tar}.gz", "tar.zst": f"{tar}.zst", "oci": ref,
            "oci-dir": str(d / "oci"), "docker-archive": str(save_as(ref, "docker-archive", d / "docker.tar")),
            "oci-archive": f"oci-archive:{save_as(ref, 'oci-archive', d / 'oci.tar')}"}


@pytest.fixture(scope="module")
def registry(sources, tmp_path_factory):
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        reg.url = reg.push(sources["oci"], "bankboot/sample:3.0.0")
        yield reg


def build(source: str, out: Path, **kw) -> tuple[dict, list[str]]:
    said: list[str] = []
    return build_image(None, "3.0.0", out, source=source, say=said.append, **kw), said


def test_every_kind_of_source_gives_the_same_bank(sources, registry, tmp_path: Path, monkeypatch,
                                                  signing_key) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(CREATED_EPOCH))  # a tarball carries no creation time
    for var, value in registry.env().items():
        monkeypatch.setenv(var, value)
    banks = {}
    for kind, source in [*sources.items(), ("registry", registry.url)]:
        out = tmp_path / f"{kind}.bank"
        m, said = build(source, out, sign_key=signing_key.private)
        banks[kind] = (m, out.read_bytes())
        if kind == "registry":
            pin = [line for line in said if "pulled docker://" in line]
            assert pin and "@sha256:" in pin[0], said
    first_m, first_bytes = banks["oci"]
    assert first_m["arch"] == "arm64" and first_m["created"] == "2024-03-01T12:00:00Z"
    for kind, (m, data) in banks.items():
        assert (m["id"], data) == (first_m["id"], first_bytes), kind
    # The pinned digest fetches the same image again.
    pinned = next(line for line in build(registry.url, tmp_path / "again.bank")[1] if "pulled" in line).split()[2]
    again, _ = build(pinned, tmp_path / "pinned.bank", sign_key=signing_key.private)
    assert again["id"] == first_m["id"]


def test_without_source_date_epoch_the_image_time_keeps_the_bank_reproducible(sources, tmp_path: Path,
                                                                               monkeypatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a, _ = build(sources["docker-archive"], tmp_path / "a.bank")
    build(sources["oci"], tmp_path / "b.bank")
    assert a["created"] == "2024-03-01T12:00:00Z"  # the config's, not now
    assert (tmp_path / "a.bank").read_bytes() == (tmp_path / "b.bank").read_bytes()
    t, _ = build(sources["tar.zst"], tmp_path / "t.bank")
    assert t["created"] == "2024-03-01T11:00:00Z"  # a tarball: its newest file


def no_output(tmp_path: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "keep") == []


@pytest.mark.parametrize("case", ["missing", "truncated", "truncated-gz", "other-arch", "bad-digest", "not-a-tar"])
def test_a_bad_source_is_a_clear_error_and_writes_nothing(case: str, sources, tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    out = tmp_path / "out" / "x.bank"
    source, kw, match = sources["oci"], {}, ""
    if case == "missing":
        source, match = str(tmp_path / "keep" / "nothing.tar"), "no such file or directory"
    elif case == "truncated":
        data = Path(sources["tarball"]).read_bytes()
        (keep / "cut.tar").write_bytes(data[:len(data) // 2 // 512 * 512])
        source, match = str(keep / "cut.tar"), "cut short"
    elif case == "truncated-gz":
        data = Path(sources["tar.gz"]).read_bytes()
        (keep / "cut.tar.gz").write_bytes(data[:len(data) // 2])
        source, match = str(keep / "cut.tar.gz"), "gzip stream is damaged or cut short"
    elif case == "other-arch":
        kw, match = {"arch": "amd64"}, "is an image for arm64, not amd64"
    elif case == "bad-digest":
        subprocess.run(["cp", "-a", sources["oci-dir"], str(keep / "oci")], check=True)
        index = json.loads((keep / "oci/index.json").read_text())
        manifest = json.loads((keep / "oci/blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
        blob = keep / "oci/blobs/sha256" / manifest["layers"][0]["digest"][7:]
        blob.chmod(0o644)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
        source, match = f"oci:{keep / 'oci'}:sample", "damaged|does not match its digest"
    elif case == "not-a-tar":
        (keep / "notes.tar").write_text("not a tar\n" * 100)
        source, match = str(keep / "notes.tar"), "not a tar archive"
    with pytest.raises(ImageError, match=match):
        build_image(None, "3.0.0", out, source=source, say=lambda _: None, **kw)
    assert not out.parent.exists()
    no_output(tmp_path)


def test_a_registry_that_refuses_or_lacks_the_image_is_a_clear_error(sources, registry, tmp_path: Path,
                                                                      monkeypatch) -> None:
    with Registry(tmp_path / "auth", auth=True) as locked:
        locked.push(sources["oci"], "bankboot/sample:3.0.0")
        for var, value in locked.env().items():
            monkeypatch.setenv(var, value)
        with pytest.raises(ImageError, match="unauthorized|authentication required.*skopeo login"):
            build(f"docker://{locked.host}/bankboot/sample:3.0.0", tmp_path / "x.bank")
    for var, value in registry.env().items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ImageError, match="manifest unknown.*no such tag"):
        build(f"docker://{registry.host}/bankboot/sample:9.9.9", tmp_path / "x.bank")
    with pytest.raises(ImageError, match="name unknown|manifest unknown"):
        build(f"docker://{registry.host}/bankboot/nothing:1", tmp_path / "x.bank")
    assert not (tmp_path / "x.bank").exists()


def test_an_image_from_an_archive_signed_twice_and_encrypted_is_published_and_staged(sources, tmp_path: Path,
                                                                                   capsys) -> None:
    """Issue 28's options on an image source (--from docker-archive: two --sign, --encrypt-to), published to
    a channel signed by both keys (its bank's signatures kept byte for byte), polled by a device that needs
    both signatures on the document and the image, staged over HTTP by decrypting."""
    from builder.cli import main
    from builder.keys import keygen
    from builder.lab.serve import Server
    from overlay_layout.net.channel import parse_document
    from overlay_layout.net.download import stage_url
    from overlay_layout.net.transport import Settings
    from overlay_layout.state import Banks
    from overlay_layout.trust import KeySet, Policy, read_public_key
    from tests.banks import install_first_image

    a, b = keygen(tmp_path / "a"), keygen(tmp_path / "b")
    dev, other = keygen(tmp_path / "dev", encryption=True), keygen(tmp_path / "other", encryption=True)
    bank, www = tmp_path / "app.bank", tmp_path / "www"
    assert main(["image", "--from", f"docker-archive:{sources['docker-archive']}", "--version", "3.0.0", "-o",
                 str(bank), "--sign", str(a[0]), "--sign", str(b[0]), "--encrypt-to", str(dev[1])]) == 0
    said = capsys.readouterr().out
    assert f"signed by keys {', '.join(sorted([a[2], b[2]]))}" in said and f"encrypted for key {dev[2]}" in said
    assert main(["publish", str(bank), str(www), "--channel", "stable", "--board", "qemu-aarch64",
                 "--sign", f"{a[0]},{b[0]}", "--device-key", str(other[0])]) == 1  # not a recipient: refused
    assert "not for this device's key" in capsys.readouterr().err and not (www / "stable.json").exists()
    assert main(["publish", str(bank), str(www), "--channel", "stable", "--board", "qemu-aarch64",
                 "--sign", f"{a[0]},{b[0]}", "--device-key", str(dev[0])]) == 0
    assert "decrypted with" in capsys.readouterr().out
    published = next((www / "banks").iterdir())
    assert published.read_bytes() == bank.read_bytes()
    both = KeySet({k[2]: read_public_key(str(k[1])) for k in (a, b)}, 2)
    doc = parse_document((www / "stable.json").read_bytes(), "stable.json", both, False)
    assert doc.signed_by == f"keys {', '.join(sorted([a[2], b[2]]))}"
    install_first_image(tmp_path / "banks")
    banks = Banks(str(tmp_path / "banks"))
    policy = Policy(both.keys, False, True, threshold=2, device_key=str(dev[0]))
    with Server(www) as srv:
        m, _ = stage_url(banks, srv.url(doc.bank), policy, "9.9.9", machine="aarch64", settings=Settings(retries=1))
    assert banks.layout.pointer("next") == m["id"] and "MB of ciphertext read" in m["_fetched"]
