"""`rdinit=` on a sealed build (qemu-aarch64), as someone who can change the kernel command line but not the
boot files would use it. The kernel runs the file it names as the first process, with the command line's
unknown words as its arguments (everything after `--` too) and its `key=value` words as its environment;
ld.so as that file runs any ELF in the initramfs. So every executable of the sealed initramfs is tried,
with and without arguments, and ld.so with every ELF program in it (and libpython): none may answer a
shell command on the console. The init itself, with no banks partition named, must end in a reboot."""

from __future__ import annotations

import io
import stat
import subprocess
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from builder.compress import decompress, detect
from builder.lab.boot import board_vm
from tests.vm.devices import Device

pytestmark = pytest.mark.vm
# A shell (or a Python prompt) answers with the evaluated value; the tty's echo of the line never has it.
PROBE = b"echo SH$((6*7))\nprint('PY'+str(6*7))\n"
ANSWERS = ("SH42", "PY42")
# Environment for the init that must not change what it is, then arguments a multi-call binary would obey.
ARGS = "BANKBOOT_ENTRY=bankctl PYTHONINSPECT=1 -- sh -i"
LD_SO = "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"
SEALED_PROGRAMS = ["bin/bankctl", "init", LD_SO, "sbin/kexec"]  # builder/initramfs.keep_only_programs


def archive_files(initramfs: Path) -> dict[str, tuple[int, bytes]]:
    """Regular files of the (compressed newc) archive: path -> (mode, content)."""
    raw = initramfs.read_bytes()
    data = decompress(raw, detect(raw))
    files, pos = {}, 0
    while data[pos:pos + 6] in (b"070701", b"070702"):
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        end = pos + 110 + fields[11]
        name = data[pos + 110:end - 1].decode()
        start = end + (-end % 4)
        if name == "TRAILER!!!":
            break
        if stat.S_ISREG(fields[1]):
            files[name] = (fields[1], data[start:start + fields[6]])
        pos = start + fields[6] + (-fields[6] % 4)
    return files


def is_program(data: bytes) -> bool:
    """An ELF that runs on its own, given to ld.so: ET_EXEC, or ET_DYN with a program interpreter (a PIE, or
    libc.so.6, which prints its version). A library has no entry point to speak of."""
    if data[:4] != b"\x7fELF":
        return False
    elf = ELFFile(io.BytesIO(data))
    return elf["e_type"] == "ET_EXEC" or any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments())


def attempt(board, initrd: Path, disk: Path, log_dir: Path, rdinit: str, words: str) -> str:
    """Boot with rdinit=`rdinit` and `words`, type the probe until QEMU exits (panic=-1 and -no-reboot:
    however the first process ends, the kernel reboots) or something answers it; return the console."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with board_vm(board, initrd, [disk], append=f"rdinit={rdinit} {words}".strip(), log_dir=log_dir) as vm:
        vm.console.expect(r"Run \S+ as init process|Kernel panic", 60)
        deadline = time.monotonic() + 40
        while True:
            try:
                vm.console.send(PROBE)
            except OSError:
                pass
            try:
                vm.wait_exit(1.5)
                return vm.console.text()
            except subprocess.TimeoutExpired:
                if any(a in vm.console.text() for a in ANSWERS):
                    return vm.console.text()
                if time.monotonic() > deadline:
                    raise AssertionError(f"rdinit={rdinit} {words}: still running after 40 s:\n"
                                         f"{vm.console.text()[-2000:]}") from None


def test_no_program_in_a_sealed_initramfs_is_a_shell_through_rdinit(device, sealed_initramfs: Path) -> None:
    files = archive_files(sealed_initramfs)
    executables = sorted(p for p, (mode, _) in files.items() if mode & 0o111)
    programs = sorted(p for p, (_, data) in files.items() if is_program(data))
    d = Device(device, "rdinit", None)
    tries = [(f"/{x}", w) for x in executables for w in ("", ARGS)]
    tries += [(f"/{LD_SO}", f"-- /{x} sh -i") for x in programs]
    tries += [(f"/{LD_SO}", "LD_LIBRARY_PATH=/bankboot -- /bankboot/libpython3.11.so.1.0 -c 'print(42)'"),
              ("/nonexistent", "root=/dev/vda2")]  # no such file: the kernel mounts root= itself and cannot
    wrong = []
    for n, (rdinit, words) in enumerate(tries):
        text = attempt(device.board, sealed_initramfs, d.disk, d.dir / f"try{n}", rdinit, words)
        if any(a in text for a in ANSWERS):
            wrong.append(f"rdinit={rdinit} {words}: a shell answered")
        elif (rdinit == "/init" or words.startswith("-- /init ")) and "nothing to boot" not in text:
            wrong.append(f"rdinit={rdinit} {words}: not the init, or it did not end in a reboot")  # no root=
    assert not wrong, "\n".join(wrong)
    assert "VFS: Unable to mount root fs" in text  # the last try: the kernel could not mount the banks partition
    assert executables == SEALED_PROGRAMS, executables  # no busybox; libraries have no execute bits
