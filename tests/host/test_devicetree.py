"""builder/lab/devicetree.py adds /chosen/rng-seed to the Raspberry Pi's device tree as the Pi firmware does
(builder/lab/boot.py gives QEMU the result): read back with dtc's own fdtget, everything else unchanged."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.board import load_board
from builder.lab.boot import machine_for
from builder.lab.devicetree import DeviceTreeError, set_chosen
from builder.parts import locate_kernel


def fdtget(path: Path, node: str, prop: str, kind: str = "") -> str:
    return subprocess.run(["fdtget", *([f"-t{kind}"] if kind else []), str(path), node, prop], capture_output=True,
                          text=True, check=True).stdout.strip()


def dts(path: Path) -> list[str]:
    return subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(path)], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_the_pi_3s_tree_gets_a_seed_and_keeps_the_rest(tmp_path: Path) -> None:
    board = load_board("raspberrypi3")
    original = locate_kernel(board).dtb_dir / board.dtb  # type: ignore[operator]
    seeded = machine_for(board).dtb
    assert seeded is not None and seeded != original
    seed = bytes.fromhex("".join(f"{int(x, 16):02x}" for x in fdtget(seeded, "/chosen", "rng-seed", "bx").split()))
    assert len(seed) == 64 and seed != bytes(64)
    assert fdtget(seeded, "/chosen", "stdout-path") == "serial1:115200n8"
    assert [line for line in dts(seeded) if "rng-seed" not in line] == dts(original)
    again = machine_for(board).dtb
    assert again is not None and again.read_bytes() != seeded.read_bytes()  # a fresh seed for every machine
    # A tree that has one keeps it; a tree without /chosen gets the node.
    assert set_chosen(seeded.read_bytes(), "rng-seed", b"x" * 64) == seeded.read_bytes()


def test_a_tree_without_chosen_gets_the_node(tmp_path: Path) -> None:
    source = tmp_path / "t.dts"
    source.write_text('/dts-v1/;\n/ { model = "t"; cpus { }; };\n')
    blob = tmp_path / "t.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(blob), str(source)], check=True)
    out = tmp_path / "seeded.dtb"
    out.write_bytes(set_chosen(blob.read_bytes(), "rng-seed", b"\x01\x02\x03\x04\x05"))
    assert fdtget(out, "/chosen", "rng-seed", "bx").split() == ["1", "2", "3", "4", "5"]
    assert fdtget(out, "/", "model") == "t"


@pytest.mark.parametrize("blob", [b"", b"\0" * 64, b"\xd0\x0d\xfe\xed" + b"\0" * 60])
def test_what_is_not_a_tree_is_refused(blob: bytes) -> None:
    with pytest.raises(DeviceTreeError):
        set_chosen(blob, "rng-seed", b"x")
