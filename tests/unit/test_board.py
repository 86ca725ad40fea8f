from __future__ import annotations

from pathlib import Path

import pytest

from builder.board import BoardError, board_names, load_board


def test_every_shipped_board_loads() -> None:
    assert {"qemu-aarch64", "qemu-x86_64"} <= set(board_names())
    for name in board_names():
        b = load_board(name)
        assert b.console in b.cmdline
        assert b.modules


def test_unknown_board_lists_the_known_ones() -> None:
    with pytest.raises(BoardError, match="unknown board 'nope'.*qemu-aarch64"):
        load_board("nope")


@pytest.mark.parametrize("body, message", [
    ('arch = "sparc"', "unknown architecture 'sparc'"),
    ('arch = "arm64"\n[kernel]\npackage = "x"\n[initramfs]\ncompression = "brotli"', "brotli"),
    ('arch = "arm64"\n[kernel]\n', "needs either `package`"),
    ('arch = "arm64"\n[kernel]\npackage = 3', "kernel.package must be a string"),
    ('arch = "arm64"\n[kernel]\npackage = "x"\n[boot]\nconsole = "ttyS0"\n[qemu]\nsystem = "q"\nargs = [1]',
     "'qemu.args' must be a list of strings"),
    ("arch = ", "not valid TOML"),
    ('arch = "arm64"\n[kernel]\npackage = "x"\n[boot]\nconsole = "ttyS0"\ndevice_key = "device.key"\n[qemu]\n'
     'system = "q"\nargs = []\ndisk = []', "boot.device_key must be an absolute path on the device"),
])
def test_bad_board_files_name_the_key_at_fault(tmp_path: Path, body: str, message: str) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(body)
    with pytest.raises(BoardError, match=message) as e:
        load_board(str(f))
    assert str(f) in str(e.value)


def test_own_kernel_board(tmp_path: Path) -> None:
    f = tmp_path / "pi.toml"
    f.write_text('arch = "arm64"\n[kernel]\nimage = "Image"\nmodules_dir = "modules/6.6.51-v8+"\n'
                 '[boot]\nconsole = "ttyS1"\n[qemu]\nsystem = "q"\nargs = []\ndisk = []\n')
    b = load_board(str(f))
    assert b.kernel.image == tmp_path / "Image"
    assert b.kernel.modules_dir == tmp_path / "modules/6.6.51-v8+"


def test_a_misspelt_key_is_refused_with_the_nearest_known_one(tmp_path) -> None:
    import pytest

    from builder.board import BoardError, load_board

    text = (Path(__file__).parents[2] / "builder/boards/qemu-aarch64.toml").read_text()
    for typo, message in [("[boot]\n", "[boot]\nrescure = \"reboot\"\n"), ("[qemu]\n", "[qemu]\nserial_idx = 1\n")]:
        bad = tmp_path / "typo.toml"
        bad.write_text(text.replace(typo, message, 1))
        with pytest.raises(BoardError, match=r"unknown key 'boot.rescure'; did you mean boot.rescue\?|"
                                             r"unknown key 'qemu.serial_idx'; did you mean qemu.serial_index\?"):
            load_board(str(bad))
    bad.write_text("wibble = 1\n" + text)
    with pytest.raises(BoardError, match="unknown key 'wibble' \\(known keys: description, arch"):
        load_board(str(bad))
