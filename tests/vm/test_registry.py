"""A bank shipped through a container registry: `bankboot publish --oci` pushes it into Debian's
docker-registry on the host, which wants bearer tokens (tests/tokens.py's token service), and the frozen
`bankctl stage` in the guest reads it from the blob URL, by range, after an anonymous token dance through
QEMU's user-mode network; the update boots. Asserted on what the guest reports (the version its image
prints, bankctl's account) and on the token service's log."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from builder.disk import build_disk
from builder.image import build_image
from builder.lab.boot import disk_vm
from builder.lab.samplerootfs import SAMPLE_PERSIST, build_sample_rootfs
from builder.ocipush import publish_oci
from tests.registry import Registry
from tests.tokens import TokenService
from tests.vm.devices import reboot, sh, up

pytestmark = pytest.mark.vm
GUEST_HOST = "10.0.2.2"  # the host's loopback as QEMU's user-mode network shows it to the guest


def test_a_bank_published_to_a_registry_is_staged_from_its_blob_url_and_boots(aarch64, test_dir: Path,
                                                                               built_initramfs, signing_key) -> None:
    board = aarch64.board
    out = test_dir / "registry"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sign = {"sign_key": signing_key.private, "confirm_boots": True, "persist": SAMPLE_PERSIST}
    build_image(build_sample_rootfs(board.arch, out / "rootfs-1.0.0", version="1.0.0"), "1.0.0",
                out / "app-1.0.0.bank", **sign)
    m = build_image(build_sample_rootfs(board.arch, out / "rootfs-1.2.0", version="1.2.0"), "1.2.0",
                    out / "app-1.2.0.bank", **sign)
    disk = out / "disk.img"
    build_disk(board, out / "app-1.0.0.bank", disk, 512 << 20, built_initramfs(board))
    with TokenService(out / "tokens", host=GUEST_HOST) as tokens, \
            Registry(out / "reg", token_auth=tokens.registry_auth()) as reg:
        token = out / "push.token"
        token.write_text(tokens.mint("fleet/app", ["pull", "push"]))
        p = publish_oci(out / "app-1.2.0.bank", f"{reg.host}/fleet/app", token_file=token, plain_http=True)
        url = p.blob_url.replace("127.0.0.1", GUEST_HOST)
        asked = len(tokens.asked)
        with disk_vm(board, disk, out / "run", reboot=True, net=True) as vm:
            assert up(vm) == "1.0.0"
            rc, said = sh(vm, f"bankctl stage {url} >/tmp/stage.log 2>&1; r=$?; tail -3 /tmp/stage.log; (exit $r)")
            assert rc == 0 and f"staged {m['id']}" in said, said
            fetched = re.search(r"fetched: ([\d.]+) MB from the network", said)
            assert fetched and float(fetched.group(1)) <= m["size"] / 1e6 + 0.1, said
            assert tokens.asked[asked:] == [{"service": "bankboot-test-registry", "scope": "repository:fleet/app:pull"}]
            reboot(vm)
            assert up(vm) == "1.2.0"  # the image itself says so; its trial commits itself
