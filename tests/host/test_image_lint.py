"""What `bankboot image` says about a root filesystem before packing it (builder/lint.py), from a directory
and from a tarball (checked through its skeleton, never unpacked), and `--kernel image`: the kernel, its
modules and kernel arguments as a bootc image carries them."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.image import ImageError, build_image
from builder.lab.samplerootfs import build_sample_rootfs
from builder.parts import SECOND_KERNELS, locate_kernel_package
from tests.images import tar_directory


@pytest.fixture(scope="module")
def sample(aarch64, tmp_path_factory) -> Path:
    board, _, _ = aarch64
    return build_sample_rootfs(board.arch, tmp_path_factory.mktemp("lint") / "rootfs", version="4.0.0")


def variant(sample: Path, tmp_path: Path, route: str, change) -> tuple[Path | None, str | None]:
    """The sample rootfs with `change` applied, as (rootfs, None) or, for the tar route, (None, tarball)."""
    root = shutil.copytree(sample, tmp_path / "rootfs", symlinks=True)
    change(root)
    if route == "dir":
        return root, None
    return None, str(tar_directory(root, tmp_path / "rootfs.tar"))


def container_leftovers(root: Path) -> None:
    (root / ".dockerenv").write_text("")
    (root / "etc/hostname").write_text("")
    (root / "etc/resolv.conf").write_text("")
    shutil.rmtree(root / "var/run", ignore_errors=True)
    (root / "var/run").unlink(missing_ok=True)
    (root / "var/run").mkdir(parents=True)
    (root / "boot").mkdir(exist_ok=True)
    (root / "boot/vmlinuz-6.1.0").write_bytes(b"old kernel")
    (root / "usr/lib/bootc/kargs.d").mkdir(parents=True)
    (root / "usr/lib/bootc/kargs.d/10-console.toml").write_text('kargs = ["console=ttyAMA0"]\n')


@pytest.mark.parametrize("route", ["dir", "tar"])
def test_lint_warns_then_strict_refuses(route: str, sample: Path, tmp_path: Path) -> None:
    rootfs, source = variant(sample, tmp_path, route, container_leftovers)
    said: list[str] = []
    build_image(rootfs, "4.0.0", tmp_path / "x.bank", source=source, say=said.append)
    text = "\n".join(said)
    for path in ("/.dockerenv", "/etc/hostname", "/etc/resolv.conf", "/var/run", "/boot", "/usr/lib/bootc/kargs.d"):
        assert f"warning: {path}" in text, (path, text)
    assert "systemd would think it runs in a container" in text and "ln -s ../run /var/run" in text
    assert "/boot/vmlinuz-6.1.0" in text and "--kernel image" in text
    assert "/etc/hosts" not in text  # the sample's is not empty
    with pytest.raises(ImageError, match=r"6 problem\(s\) in the image \(--strict\)") as e:
        build_image(rootfs, "4.0.0", tmp_path / "y.bank", source=source, strict=True, say=lambda _: None)
    assert "warning: /.dockerenv" in str(e.value)
    assert not (tmp_path / "y.bank").exists()


@pytest.mark.parametrize("route", ["dir", "tar"])
def test_an_init_that_is_not_executable_is_refused(route: str, sample: Path, tmp_path: Path) -> None:
    rootfs, source = variant(sample, tmp_path, route, lambda root: (root / "bin/busybox").chmod(0o644))
    with pytest.raises(ImageError, match=r"error: /sbin/init \(-> /bin/busybox\): not executable \(mode 644\)"):
        build_image(rootfs, "4.0.0", tmp_path / "x.bank", source=source, say=lambda _: None)
    assert not (tmp_path / "x.bank").exists()


def bootc_kernel(kernel, count: int = 1):
    """A change giving the rootfs /usr/lib/modules/<release>/vmlinuz and its modules.dep (merged /usr, as
    bootc and Debian images are), and kernel arguments in kargs.d."""
    def change(root: Path) -> None:
        (root / "usr/lib").mkdir(parents=True, exist_ok=True)
        if (root / "lib").is_dir() and not (root / "lib").is_symlink():
            shutil.copytree(root / "lib", root / "usr/lib", dirs_exist_ok=True, symlinks=True)
            shutil.rmtree(root / "lib")
        (root / "lib").symlink_to("usr/lib")
        for n in range(count):
            release = kernel.version + ("" if n == 0 else f"-other{n}")
            d = root / "usr/lib/modules" / release
            d.mkdir(parents=True)
            shutil.copyfile(kernel.image, d / "vmlinuz")
            for meta in ("modules.dep", "modules.order", "modules.builtin"):
                shutil.copyfile(kernel.modules_dir / meta, d / meta)
        kargs = root / "usr/lib/bootc/kargs.d"
        kargs.mkdir(parents=True)
        (kargs / "10-console.toml").write_text('kargs = ["console=ttyAMA0", "quiet"]\n')
        (kargs / "20-x86.toml").write_text('kargs = ["nomodeset"]\nmatch-architectures = ["x86_64"]\n')
        (kargs / "30-arm.toml").write_text('kargs = ["arm64.nopauth"]\nmatch-architectures = ["aarch64"]\n')
    return change


@pytest.mark.parametrize("route", ["dir", "tar"])
def test_kernel_from_the_image(route: str, sample: Path, tmp_path: Path, built_initramfs, aarch64) -> None:
    board, _, _ = aarch64
    kernel = locate_kernel_package(board.arch, SECOND_KERNELS["arm64"])
    rootfs, source = variant(sample, tmp_path, route, bootc_kernel(kernel))
    initramfs = built_initramfs(board)
    said: list[str] = []
    m = build_image(rootfs, "4.1.0", tmp_path / "k.bank", source=source, kernel="image", kernel_initramfs=initramfs,
                    kernel_append="bankboot.test=1", say=said.append)
    assert m["kernel"]["release"] == kernel.version
    assert m["kernel"]["append"] == "console=ttyAMA0 quiet arm64.nopauth bankboot.test=1"
    assert not any("kargs.d" in line for line in said), said
    with tarfile.open(tmp_path / "k.bank") as tar:
        tar.extract("rootfs.squashfs", tmp_path, filter="data")
    from builder.squashfs import Squashfs

    assert Squashfs(str(tmp_path / "rootfs.squashfs")).read_file("/boot/bankboot/kernel") == kernel.image.read_bytes()


@pytest.mark.parametrize("count", [0, 2])
def test_kernel_from_an_image_with_no_or_two_kernels_is_refused(count: int, sample: Path, tmp_path: Path,
                                                                  built_initramfs, aarch64) -> None:
    board, _, _ = aarch64
    kernel = locate_kernel_package(board.arch, SECOND_KERNELS["arm64"])
    rootfs, source = variant(sample, tmp_path, "tar", bootc_kernel(kernel, count))
    with pytest.raises(ImageError, match="/usr/lib/modules holds .*exactly one kernel"):
        build_image(rootfs, "4.1.0", tmp_path / "k.bank", source=source, kernel="image",
                    kernel_initramfs=built_initramfs(board), say=lambda _: None)
    assert not (tmp_path / "k.bank").exists()


def test_a_hardlink_to_a_device_node_in_a_tarball(sample: Path, tmp_path: Path) -> None:
    """The skeleton leaves device nodes out (nothing checks them): a hardlink to one is left out of it too,
    and both are in the bank (Debian's tarballs can hold such links)."""
    tarball = tar_directory(sample, tmp_path / "plain.tar")
    with tarfile.open(tarball, "a") as out:
        node = tarfile.TarInfo("dev/null-node")
        node.type, node.devmajor, node.devminor, node.mode = tarfile.CHRTYPE, 1, 3, 0o666
        link = tarfile.TarInfo("dev/null-link")
        link.type, link.linkname = tarfile.LNKTYPE, "dev/null-node"
        out.addfile(node)
        out.addfile(link)
    build_image(None, "4.0.0", tmp_path / "x.bank", source=str(tarball), say=lambda _: None)
    subprocess.run(["tar", "xf", str(tmp_path / "x.bank"), "-C", str(tmp_path), "rootfs.squashfs"], check=True)
    out = subprocess.run(["unsquashfs", "-lln", str(tmp_path / "rootfs.squashfs"), "dev"], capture_output=True,
                         text=True, check=True).stdout
    nodes = [line for line in out.splitlines() if "/dev/null-" in line]
    assert len(nodes) == 2 and all(line.startswith("crw-rw-rw-") and " 1,  3 " in line for line in nodes), out
