"""Which firmware `bankboot bench --only firmware` compares per board (booting them is the bench itself)."""

from __future__ import annotations

from builder.board import load_board
from builder.lab.benchfirmware import boards_to_compare


def test_each_board_is_compared_with_direct_and_the_firmware_it_can_run() -> None:
    def rows(name: str) -> list[tuple[str, str]]:
        return [(b.name, f) for b, f in boards_to_compare(load_board(name))]

    assert rows("qemu-aarch64") == [("qemu-aarch64", "direct"), ("qemu-aarch64", "uboot"),
                                    ("qemu-aarch64-uefi", "uefi")]
    assert rows("qemu-x86_64") == [("qemu-x86_64", "direct"), ("qemu-x86_64", "uefi")]
    assert rows("qemu-armv7") == [("qemu-armv7", "direct"), ("qemu-armv7", "uboot")]
    assert rows("raspberrypi3") == [("raspberrypi3", "direct")]  # its firmware cannot run under QEMU
