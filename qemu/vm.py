"""Boot a kernel and initramfs (and disks) on a machine under QEMU's TCG for tests and people: serial
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

from qemu.console import SerialConsole
from qemu.machine import Machine, qemu_command


class VM:
    """`with VM(machine, kernel, initrd, cmdline) as vm: vm.console.expect(...)`; builder/lab/boot.py makes
    one for a board."""

    def __init__(self, machine: Machine, kernel: Path | None, initrd: Path | None, cmdline: str,
                 disks: list[Path] | None = None, log_dir: Path | None = None, reboot: bool = False, net: bool = False,
                 clock: str = "host", firmware: list[str] | None = None) -> None:
        """firmware: QEMU arguments of a firmware that loads the kernel from the disk (kernel, initrd None)."""
        self.firmware = firmware
        self.net = net
        self.clock = clock  # qemu.machine.CLOCKS
        self.machine = machine
        self.initrd = initrd
        self.kernel = kernel
        self.disks = disks or []
        self.cmdline = cmdline
        self.reboot = reboot
        self.tmp = Path(tempfile.mkdtemp(prefix="bankboot-vm-"))
        self.log_dir = log_dir or self.tmp
        self.proc: subprocess.Popen | None = None
        self._console: SerialConsole | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self.started_at = 0.0

    def start(self, connect_timeout: float = 30.0) -> VM:
        for f in [self.initrd, self.kernel, *self.disks]:
            if f is not None and not Path(f).is_file():
                raise FileNotFoundError(f"{f} does not exist")
        self.log_dir.mkdir(parents=True, exist_ok=True)  # a firmware boot reads nothing into it first
        sock = self.tmp / "serial.sock"
        self._console = SerialConsole(sock, self.log_dir / "console.log")
        serial = ["-chardev", f"socket,id=ser0,path={sock},server=off", "-serial", "chardev:ser0"]
        cmd = qemu_command(self.machine, self.kernel, self.initrd, self.cmdline, self.disks, serial,
                           qmp=str(self.tmp / "qmp.sock"), net=self.net, clock=self.clock,
                           firmware=self.firmware)
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
    def console(self) -> SerialConsole:
        """The guest's serial console (once started)."""
        if self._console is None:
            raise RuntimeError("the VM has not been started")
        return self._console

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

    def flushes(self) -> int:
        """How many flushes the guest has sent to its disks since QEMU started (QMP query-blockstats)."""
        stats: list[dict[str, dict[str, int]]] = self.qmp.cmd("query-blockstats")  # type: ignore[assignment]
        return sum(int(d["stats"]["flush_operations"]) for d in stats)

    def status(self) -> str:
        return str(self.qmp.cmd("query-status")["status"])  # type: ignore[index]

    def set_link(self, up: bool) -> None:
        """Plug or unplug the network cable (the NIC stays; packets stop)."""
        self.qmp.cmd("set_link", name="net0", up=up)

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
        if self._console:
            self._console.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
