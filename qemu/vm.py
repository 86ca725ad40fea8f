"""Boot a board's kernel and initramfs (and disks) under QEMU's TCG for tests and people: serial
console over a socket (see console.py), QMP through qemu.qmp, power cuts on demand, and everything
(process, sockets, temp dir) cleaned up however the test ends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from builder.board import Board
from builder.parts import locate_kernel
from qemu.console import SerialConsole


def kvm_usable() -> bool:
    """KVM only where the CPU advertises vmx/svm: the /dev/kvm here cannot run stock kernels."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return os.access("/dev/kvm", os.R_OK | os.W_OK) and (" vmx" in flags or " svm" in flags)


def qemu_command(board: Board, kernel: Path, initrd: Path, cmdline: str, disks: list[Path],
                 serial: list[str], qmp: str | None = None) -> list[str]:
    if not board.qemu_system:
        raise RuntimeError(f"board {board.name} has no QEMU machine (real hardware only)")
    binary = shutil.which(board.qemu_system)
    if binary is None:
        raise RuntimeError(f"{board.qemu_system} is not installed (make deps installs it)")
    cmd = [binary, *board.qemu_args]
    if "-accel" not in board.qemu_args:
        cmd += ["-accel", "kvm" if kvm_usable() and board.arch.uname == os.uname().machine else "tcg"]
    if board.dtb:
        from builder.parts import locate_kernel

        dtb_dir = locate_kernel(board).dtb_dir
        if dtb_dir is None or not (dtb_dir / board.dtb).is_file():
            raise RuntimeError(f"board {board.name}: device tree {board.dtb} not found in the kernel package")
        cmd += ["-dtb", str(dtb_dir / board.dtb)]
    # The console is the board's serial_index-th serial port; the ones before it go nowhere.
    cmd += ["-display", "none", "-nodefaults", "-no-user-config", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", cmdline, *["-serial", "null"] * board.serial_index, *serial]
    if qmp:
        cmd += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    for i, disk in enumerate(disks):
        cmd += board.disk_args(disk, i)
    return cmd


class VM:
    """`with VM(board, initrd=...) as vm: vm.console.expect(...)`."""

    def __init__(self, board: Board, initrd: Path, disks: list[Path] | None = None, append: str = "",
                 log_dir: Path | None = None, kernel: Path | None = None, reboot: bool = False,
                 cmdline: str | None = None) -> None:
        self.board = board
        self.initrd = initrd
        self.kernel = kernel or locate_kernel(board).image
        self.disks = disks or []
        self.cmdline = " ".join(x for x in (cmdline if cmdline is not None else board.cmdline, append) if x)
        self.reboot = reboot
        self.tmp = Path(tempfile.mkdtemp(prefix="bankboot-vm-"))
        self.log_dir = log_dir or self.tmp
        self.proc: subprocess.Popen | None = None
        self.console: SerialConsole | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self.started_at = 0.0

    @classmethod
    def from_disk(cls, board: Board, disk: Path, log_dir: Path, append: str = "", reboot: bool = False) -> VM:
        """Boot a disk as firmware would: kernel, initramfs and cmdline.txt from its boot partition."""
        from builder.disk import read_boot_files

        boot = log_dir / "bootfiles"
        boot.mkdir(parents=True, exist_ok=True)
        kernel, initrd, cmdline = read_boot_files(disk, boot, board.kernel_name)
        return cls(board, initrd, disks=[disk], log_dir=log_dir, kernel=kernel, cmdline=cmdline, append=append,
                   reboot=reboot)

    def start(self, connect_timeout: float = 30.0) -> VM:
        for f in [self.initrd, self.kernel, *self.disks]:
            if not Path(f).is_file():
                raise FileNotFoundError(f"{f} does not exist")
        sock = self.tmp / "serial.sock"
        self.console = SerialConsole(sock, self.log_dir / "console.log")
        serial = ["-chardev", f"socket,id=ser0,path={sock},server=off", "-serial", "chardev:ser0"]
        cmd = qemu_command(self.board, self.kernel, self.initrd, self.cmdline, self.disks, serial,
                           qmp=str(self.tmp / "qmp.sock"))
        if not self.reboot:
            cmd.append("-no-reboot")
        (self.log_dir / "qemu.cmd").write_text(" ".join(cmd) + "\n")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(self.log_dir / "qemu.log", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.console.accept(connect_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def qmp(self) -> QEMUMonitorProtocol:
        if self._qmp is None:
            q = QEMUMonitorProtocol(str(self.tmp / "qmp.sock"))
            deadline = time.monotonic() + 10
            while True:
                try:
                    q.connect()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            self._qmp = q
        return self._qmp

    def status(self) -> str:
        return self.qmp.cmd("query-status")["status"]

    def system_reset(self) -> None:
        self.qmp.cmd("system_reset")

    def quit(self) -> None:
        """Ask QEMU to exit now (like closing its window): the guest gets no shutdown either."""
        try:
            self.qmp.cmd("quit")
        except Exception:  # QEMU may close the socket before it answers
            pass
        if self.proc:
            self.proc.wait(10)

    def power_cut(self) -> None:
        """Pull the plug: QEMU dies at once, nothing is flushed or shut down in the guest."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self._qmp is not None:
            try:
                self._qmp.close()
            except Exception:
                pass
            self._qmp = None
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.power_cut()
        if self.console:
            self.console.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
