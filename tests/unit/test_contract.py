"""The builder-device contract: initramfs.conf round-trips, and one architecture table answers both sides."""

from __future__ import annotations

import pytest

from builder.arch import ARCHES as BUILDER_ARCHES
from overlay_layout.contract import ARCHES, InitramfsConf, UnknownArch, arch_named, arch_of_machine


def test_conf_round_trips_every_field() -> None:
    conf = InitramfsConf(board="qemu-aarch64", kernel="6.1.0-50-arm64", arch="arm64", console="ttyAMA0",
                         bankboot="0.9.0", image_modules=True, rescue="shell", unconfirmed_boots=5, sealed=True,
                         kernel_name="Image", trusted=("ab12", "cd34"), unsigned=True, downgrade=True,
                         build="init-x", interp="/lib/ld-linux-aarch64.so.1", libdirs=("/lib", "/usr/lib"),
                         kexec="tools", threshold=2, device_key="/run/tpm/device.key")
    back = InitramfsConf.parse(conf.render())
    for field in InitramfsConf.FIELDS:
        assert getattr(back, field) == getattr(conf, field), field


def test_conf_text_is_what_the_docs_show() -> None:
    text = InitramfsConf(board="b", sealed=True, trusted=("k1", "k2"), unsigned=False).render()
    assert "sealed=yes\n" in text and "trusted=k1,k2\n" in text and "unsigned=refused\n" in text


def test_conf_missing_keys_read_as_defaults_and_unknown_keys_are_kept() -> None:
    conf = InitramfsConf.parse("board=x\nfuture=1\nunconfirmed_boots=zero\n# comment=1\n")
    assert conf.board == "x" and conf.sealed is False and conf.unconfirmed_boots == 3
    assert conf.extra == {"future": "1"}
    assert "future=1\n" in conf.render()


def test_missing_conf_file_is_the_defaults(tmp_path) -> None:
    conf = InitramfsConf.read(str(tmp_path / "none"))
    assert conf.sealed is False and conf.trusted == ()


def test_ld_so_comes_from_the_build_else_the_architecture() -> None:
    assert InitramfsConf(interp="/lib/x.so").ld_so() == "/lib/x.so"
    assert InitramfsConf(arch="amd64").ld_so() == "/lib64/ld-linux-x86-64.so.2"


def test_arch_lookups() -> None:
    assert arch_of_machine("armv8l").debian == "armhf"
    assert arch_of_machine("aarch64").finit_module == 273
    assert arch_named("armhf").kexec_file_load is None
    with pytest.raises(UnknownArch, match="riscv64"):
        arch_of_machine("riscv64")
    with pytest.raises(UnknownArch, match="known: amd64, arm64, armhf"):
        arch_named("mips")


def test_builder_table_is_the_contract_table() -> None:
    assert sorted(BUILDER_ARCHES) == sorted(a.debian for a in ARCHES)
    for a in ARCHES:
        b = BUILDER_ARCHES[a.debian]
        assert (b.triplet, b.elf_machine, b.elf_class, b.uname) == (a.triplet, a.elf_machine, a.elf_class, a.uname)
