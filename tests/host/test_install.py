"""bankboot as a user installs it: the wheel built from this checkout, installed into a fresh venv outside
it, run from another directory. Its cache is given with --cache (the parts `make deps` fetched, so no kernel
is downloaded again); everything else it needs must be in the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from builder.paths import cache_dir, package_root
from initfs import VERSION

# The runtime dependencies, pinned as requirements.txt pins them (wheels fetched once into the cache).
RUNTIME = ("pyelftools", "qemu.qmp", "pynacl", "zstandard", "cffi", "pycparser")


def pins() -> list[str]:
    lines = (package_root() / "requirements.txt").read_text().splitlines()
    return [line for line in lines if line.split("==")[0].lower() in RUNTIME]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The fresh venv's bin directory."""
    d = tmp_path_factory.mktemp("install")
    src = d / "src"  # a copy: setuptools writes build/ beside the sources
    shutil.copytree(package_root(), src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info",
                                                                          "__pycache__", ".*_cache"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(d / "dist"),
         str(src)], d)
    wheelhouse = cache_dir() / "wheelhouse"  # fetched from PyPI once per set of pins
    stamp = wheelhouse / "pins.txt"
    if not stamp.is_file() or stamp.read_text() != "\n".join(pins()):
        run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheelhouse), *pins()], d)
        stamp.write_text("\n".join(pins()))
    venv.create(d / "venv", with_pip=True)
    wheel = next((d / "dist").glob("bankboot-*.whl"))
    run([str(d / "venv/bin/pip"), "install", "-q", "--no-index", "--find-links", str(wheelhouse), str(wheel)], d)
    return d / "venv/bin"


def test_the_wheel_holds_every_package(installed: Path) -> None:
    site = next(installed.parent.glob("lib/python3*/site-packages"))
    for pkg in ("builder", "builder/boards", "initfs", "overlay_layout", "qemu"):
        assert (site / pkg).is_dir(), pkg
    assert sorted(p.name for p in (site / "builder/boards").glob("*.toml")) == \
        sorted(p.name for p in (package_root() / "builder/boards").glob("*.toml"))
    assert not (site / "qemu/__init__.py").exists()  # still a namespace portion beside qemu.qmp


def test_an_installed_bankboot_builds_from_another_directory(installed: Path, tmp_path: Path, signing_key,
                                                             built_initramfs, aarch64) -> None:
    board, _, _ = aarch64
    work = tmp_path / "product"  # a product repository, nothing of bankboot's in it
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANKBOOT_", "VIRTUAL_ENV", "PYTHON"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    bankboot = str(installed / "bankboot")
    assert run([bankboot, "--version"], work, env).strip() == f"bankboot {VERSION}"
    # Without --cache it uses $XDG_CACHE_HOME/bankboot, where nothing is fetched yet: it says so.
    proc = subprocess.run([bankboot, "initramfs", "-o", "x.img", "--trust", str(signing_key.public)], cwd=work,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and f"the cache {tmp_path / 'xdg' / 'bankboot'} lacks it" in proc.stderr
    out = run([bankboot, "initramfs", "--cache", str(cache_dir()), "--board", board.name, "-o", "initramfs.img",
               "--trust", str(signing_key.public)], work, env)
    assert "initramfs.img" in out
    # the same sources, the same inputs: the same bytes as the checkout's build
    assert (work / "initramfs.img").read_bytes() == built_initramfs(board).read_bytes()
    run([bankboot, "sample-rootfs", "--cache", str(cache_dir()), "-o", "rootfs"], work, env)
    out = run([bankboot, "image", "--rootfs", "rootfs", "--version", "1.0.0", "--sign", str(signing_key.private),
               "-o", "app.bank"], work, env)
    assert "app.bank: image 1.0.0-" in out and (work / "app.bank").is_file()
    assert not (tmp_path / "xdg" / "bankboot").exists() or not any((tmp_path / "xdg" / "bankboot").iterdir())
