"""Keys and encryption with the real builder (mksquashfs, veritysetup) and a real server (nginx): `bankboot
sign` adds a signature and changes nothing else, `bankboot key-update` builds a chain only a threshold can
extend, encrypted banks inspect and install with a recipient's key, and an encrypted update over HTTP
fetches only the chunks the device lacks and resumes after a cut."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest

from builder.bankspart import banks_partition, read_file
from builder.cli import main
from builder.disk import build_disk
from builder.image import ImageError, build_image, read_bank
from builder.inspect import inspect_file
from builder.keys import keygen
from builder.lab.samplerootfs import build_sample_rootfs
from builder.lab.serve import Server
from builder.signing import SigningError, sign_file
from overlay_layout import encryption
from overlay_layout.net.download import stage_url
from overlay_layout.net.transport import Settings
from overlay_layout.stage import StageError
from overlay_layout.state import Banks
from overlay_layout.trust import Policy, key_id, read_public_key
from tests.banks import install_first_image, make_bank


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    k = {n: keygen(d / n) for n in ("a", "b", "c")}
    k.update({n: keygen(d / n, encryption=True) for n in ("dev1", "dev2", "dev3")})
    return k


@pytest.fixture(scope="module")
def rootfs(aarch64, tmp_path_factory) -> Path:
    return build_sample_rootfs(aarch64.board.arch, tmp_path_factory.mktemp("keysimg") / "rootfs", version="2.0.0")


def test_bankboot_sign_adds_a_signature_and_changes_nothing_else(rootfs: Path, keys, tmp_path: Path) -> None:
    bank = tmp_path / "app.bank"
    m = build_image(rootfs, "2.0.0", bank, sign_key=(keys["a"][0], keys["b"][0]))
    assert sorted(s["key"] for s in m["signatures"]) == sorted([keys["a"][2], keys["b"][2]])
    with read_bank(bank) as b:
        tail_before = bank.read_bytes()[b.members["rootfs.squashfs"].offset - 512:]
    assert main(["sign", str(bank), "--key", str(keys["c"][0])]) == 0
    with read_bank(bank) as b:
        assert bank.read_bytes()[b.members["rootfs.squashfs"].offset - 512:] == tail_before
        assert {k: v for k, v in b.manifest.items() if k != "signatures"} == \
            {k: v for k, v in m.items() if k != "signatures"}
    report = inspect_file(bank, (keys["a"][1], keys["c"][1]))
    assert report["ok"] and report["files_ok"]
    assert {s["key"]: s["valid"] for s in report["signatures"]} == {keys["a"][2]: True, keys["b"][2]: None,
                                                                    keys["c"][2]: True}
    with pytest.raises(SigningError, match=f"already signed by key {keys['c'][2]}"):
        sign_file(bank, (keys["c"][0],))
    data = bytearray(bank.read_bytes())  # a signer vouches for the files: a changed one is not signed
    data[-20000] ^= 1
    bank.write_bytes(bytes(data))
    with pytest.raises(SigningError, match="do not match its manifest"):
        sign_file(bank, (keys["a"][0],))


def test_a_chain_file_grows_only_by_updates_that_meet_both_thresholds(rootfs: Path, keys, tmp_path: Path,
                                                                        capsys) -> None:
    chain = tmp_path / "chain.json"
    a, b, c = (keys[n] for n in "abc")
    assert main(["key-update", str(chain), "--root", str(a[1]), "--keys", f"{b[1]},{c[1]}", "--threshold", "2",
                 "--sign", str(a[0]), "--sign", str(b[0])]) == 0
    out = capsys.readouterr().out
    assert "signed by 1 of the 2 key(s) it needs from the set it names" in out  # c has not signed yet
    with pytest.raises(ImageError, match="key update 1 is signed by 1 of the 2 .* below the threshold"):
        build_image(rootfs, "2.1.0", tmp_path / "x.bank", sign_key=(b[0], c[0]), key_updates=chain)
    assert main(["key-update", str(chain), "--keys", str(a[1])]) == 1  # the last one is not fully signed
    assert "sign it fully before the next one" in capsys.readouterr().err
    assert main(["sign", str(chain), "--key", str(c[0])]) == 0
    assert "signed by enough keys" in capsys.readouterr().out
    with pytest.raises(ImageError, match="must be signed by 2 of the keys its key updates put in force"):
        build_image(rootfs, "2.1.0", tmp_path / "x.bank", sign_key=(a[0], b[0]), key_updates=chain)
    m = build_image(rootfs, "2.1.0", tmp_path / "r.bank", sign_key=(a[0], b[0], c[0]), key_updates=chain)
    assert [u["serial"] for u in m["key_updates"]] == [1]
    report = inspect_file(tmp_path / "r.bank", (a[1],))
    assert "put in force keys" in report["key_updates_lead"] and report["ok"]
    assert json.loads(chain.read_text())["root"]["keys"] == {a[2]: a[1].read_text().split()[1]}


def test_an_encrypted_bank_inspects_and_installs_only_with_a_recipients_key(aarch64, rootfs: Path, keys, tmp_path,
                                                                            built_initramfs, signing_key) -> None:
    bank = tmp_path / "enc.bank"
    m = build_image(rootfs, "2.0.0", bank, sign_key=signing_key.private, encrypt_to=(keys["dev1"][1], keys["dev2"][1]))
    assert sorted(r["key"] for r in m["encryption"]["recipients"]) == sorted([keys["dev1"][2], keys["dev2"][2]])
    sq = Path(rootfs.parent / "plain.squashfs")
    build_image(rootfs, "2.0.0", tmp_path / "plain.bank", sign_key=signing_key.private)
    with read_bank(tmp_path / "plain.bank") as p:
        sq.write_bytes(p.read(p.members["rootfs.squashfs"].offset, 1 << 16))
    assert sq.read_bytes()[:4096] not in bank.read_bytes()  # the squashfs's first block is nowhere in clear
    assert inspect_file(bank, (signing_key.public,))["files_ok"] is None
    assert inspect_file(bank, (signing_key.public,), None, keys["dev2"][0])["files_ok"] is True
    assert inspect_file(bank, (signing_key.public,), None, keys["dev3"][0])["files_ok"] is False
    with pytest.raises(ImageError, match="is encrypted: give --device-key"):
        build_disk(aarch64.board, bank, tmp_path / "disk.img", 256 << 20, built_initramfs(aarch64.board))
    build_disk(aarch64.board, bank, tmp_path / "disk.img", 256 << 20, built_initramfs(aarch64.board),
               device_key=keys["dev1"][0])
    with banks_partition(tmp_path / "disk.img", write=False) as part:
        installed = read_file(part, f"overlay/{m['id']}/rootfs.squashfs")
    assert installed[:4096] == sq.read_bytes()[:4096]  # stored plain, behind dm-verity like any image


def served_pair(root: Path, public: bytes) -> tuple[bytes, bytes]:
    old = random.Random(1).randbytes(6 << 20)
    new = old[:3 << 20] + b"a changed config file" + old[(3 << 20) + 100:]
    make_bank(root / "old.bank", "2.0.0", old, encrypt_to=(public,))
    make_bank(root / "new.bank", "2.1.0", new, encrypt_to=(public,))
    return old, new


def fetched(manifest: dict) -> tuple[float, float, float]:
    """(MB of ciphertext read, MB taken from the device's images, MB kept from an earlier attempt)."""
    found = re.fullmatch(r"([\d.]+) MB of ciphertext read, ([\d.]+) MB taken from images on this device, "
                         r"([\d.]+) MB decrypted by an earlier attempt", manifest["_fetched"])
    assert found, manifest["_fetched"]
    return float(found[1]), float(found[2]), float(found[3])


def test_an_encrypted_update_over_http_fetches_only_the_changed_chunks_and_resumes(keys, tmp_path: Path,
                                                                                    monkeypatch) -> None:
    www = tmp_path / "www"
    www.mkdir()
    _, public = encryption.read_recipient(str(keys["dev1"][1]))
    _, new = served_pair(www, public)
    install_first_image(tmp_path / "banks")
    banks = Banks(str(tmp_path / "banks"))
    policy = Policy({}, allow_unsigned=True, allow_downgrade=True, device_key=str(keys["dev1"][0]))
    with Server(www) as srv:
        m, _ = stage_url(banks, srv.url("old.bank"), policy, "9.9.9", machine="x86_64", settings=Settings(retries=1))
        assert fetched(m)[0] > 6.0  # all of it, tags and all
        banks.mark_good(m["id"])
        real = encryption._Partial.write
        written = [0]

        def cut(self, data: bytes) -> None:  # the link goes half-way through the changed part
            written[0] += 1
            if written[0] == 150:
                raise KeyboardInterrupt
            real(self, data)

        monkeypatch.setattr(encryption._Partial, "write", cut)
        with pytest.raises(KeyboardInterrupt):
            stage_url(banks, srv.url("new.bank"), policy, "9.9.9", machine="x86_64", settings=Settings(retries=1))
        monkeypatch.undo()
        assert banks.layout.pointer("next") is None
        assert any(n.startswith(".download-") for n in os.listdir(banks.layout.overlay))
        m2, _ = stage_url(banks, srv.url("new.bank"), policy, "9.9.9", machine="x86_64", settings=Settings(retries=1))
        network, local, resumed = fetched(m2)
        assert network < 0.6 and resumed > 1.0 and local + resumed + network > 6.0, m2["_fetched"]
        assert Path(banks.layout.squashfs(m2["id"])).read_bytes()[4:4 + len(new)] == new
        make_bank(www / "later.bank", "2.2.0", new + b"later", encrypt_to=(public,))
        with pytest.raises(StageError, match="a bank for another device"):
            stage_url(banks, srv.url("later.bank"), Policy({}, True, True, device_key=str(keys["dev3"][0])), "9.9.9",
                      machine="x86_64", settings=Settings(retries=1))
        assert not [n for n in os.listdir(banks.layout.overlay) if "2.2.0" in n]
    assert key_id(read_public_key(str(keys["a"][1]))) == keys["a"][2]


def test_an_encrypted_download_through_a_stalling_then_dropping_link_resumes_and_completes(keys, tmp_path: Path
                                                                                         ) -> None:
    """The network stage's faults reach an encrypted stage as they reach a plain one: a link that stalls
    is a transient DownloadError that keeps what was decrypted and checked; one that drops every 2 MB is
    retried from the byte reached (the transport's ranges); a 404 is refused and leaves nothing."""
    from overlay_layout.net.download import DownloadError
    from tests.netfaults import FaultProxy, pump

    www = tmp_path / "www"
    www.mkdir()
    _, public = encryption.read_recipient(str(keys["dev1"][1]))
    make_bank(www / "big.bank", "2.0.0", random.Random(4).randbytes(8 << 20), encrypt_to=(public,))
    install_first_image(tmp_path / "banks")
    banks = Banks(str(tmp_path / "banks"))
    policy = Policy({}, allow_unsigned=True, allow_downgrade=True, device_key=str(keys["dev1"][0]))

    def stage(url: str, **kw):
        return stage_url(banks, url, policy, "9.9.9", machine="x86_64",
                         settings=Settings(connect_timeout=2, environ={}, **kw))

    def stall(request, answer, up, client, state) -> bool:  # 8 bytes a second after 6 MB (a 4 MB run decrypted)
        client.sendall(answer)
        if int(state["body_sent"]) < (6 << 20):
            pump(up, client, state, limit=(6 << 20) - int(state["body_sent"]))
        pump(up, client, state, limit=64, rate=8)
        return False

    def drop(request, answer, up, client, state) -> bool:
        client.sendall(answer)
        pump(up, client, state, limit=2 << 20)
        return False

    with Server(www) as srv:
        with FaultProxy(("127.0.0.1", srv.port), stall) as proxy, \
                pytest.raises(DownloadError, match="resumes") as e:
            stage(proxy.url("big.bank"), retries=1, timeout=1)
        assert e.value.transient and banks.layout.pointer("next") is None
        assert [n for n in os.listdir(banks.layout.overlay) if n.startswith(".download-")]
        said: list[str] = []
        with FaultProxy(("127.0.0.1", srv.port), drop) as proxy:
            m, _ = stage(proxy.url("big.bank"), retries=3, say=said.append)
        network, _local, resumed = fetched(m)
        assert resumed > 2.0 and network < 6.5, m["_fetched"]  # the stalled attempt's verified part is kept
        assert any("retrying in" in s for s in said), said
        assert banks.layout.pointer("next") == m["id"]
        assert Path(banks.layout.squashfs(m["id"])).read_bytes()[4:4 + (8 << 20)] == \
            random.Random(4).randbytes(8 << 20)
        with pytest.raises(DownloadError, match="404") as e:
            stage(srv.url("missing.bank"), retries=1)
        assert not e.value.transient


def test_an_encrypted_download_only_waits_plain_for_apply(keys, tmp_path: Path) -> None:
    """`bankctl poll --download-only` of an encrypted bank: decrypted as it comes into `.download-<id>`, not
    staged (no `next`); `apply` stages those plain files (checked against the manifest's plain sizes and
    hashes, no network), and the image directory keeps none of the download's marks."""
    from overlay_layout.net.downloaded import HEAD, NOTE, apply, find

    www = tmp_path / "www"
    www.mkdir()
    _, public = encryption.read_recipient(str(keys["dev1"][1]))
    _, new = served_pair(www, public)
    install_first_image(tmp_path / "banks")
    banks = Banks(str(tmp_path / "banks"))
    policy = Policy({}, allow_unsigned=True, allow_downgrade=True, device_key=str(keys["dev1"][0]))
    with Server(www) as srv:
        m, stats = stage_url(banks, srv.url("new.bank"), policy, "9.9.9", machine="x86_64",
                             settings=Settings(retries=1), download_only=True)
    assert stats.downloaded and banks.layout.pointer("next") is None
    note = find(banks)
    assert note is not None and note["image"] == m["id"]
    assert Path(note["dir"], "rootfs.squashfs").read_bytes()[4:4 + len(new)] == new  # plain
    applied = apply(banks, policy, "9.9.9", machine="x86_64")
    assert applied["id"] == m["id"] and banks.layout.pointer("next") == m["id"]
    image_dir = Path(banks.layout.image_dir(m["id"]))
    assert not (image_dir / HEAD).exists() and not (image_dir / NOTE).exists()
    assert Path(banks.layout.squashfs(m["id"])).read_bytes()[4:4 + len(new)] == new
