"""A guest's serial console over a Unix socket. We listen and QEMU connects as a client
(`-chardev socket,server=off`), so nothing the guest prints before we attach is lost. Everything read is
kept (and teed to a log file); `expect` matches from where the last match ended."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path


class ConsoleTimeout(AssertionError):
    """The guest did not print what was expected in time. Carries the console's tail for the report."""


class SerialConsole:
    def __init__(self, sock_path: Path, log_path: Path | None = None) -> None:
        self.sock_path = sock_path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(sock_path))
        self.server.listen(1)
        self.conn: socket.socket | None = None
        self.buffer = bytearray()
        self.pos = 0  # where the next expect() starts looking
        self.closed = False
        self._cond = threading.Condition()
        self._log = open(log_path, "ab") if log_path else None
        self._thread: threading.Thread | None = None

    def accept(self, timeout: float) -> None:
        self.server.settimeout(timeout)
        try:
            self.conn, _ = self.server.accept()
        except TimeoutError:
            raise ConsoleTimeout(f"QEMU did not connect to the serial socket {self.sock_path} "
                                 f"within {timeout:.0f} s") from None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.conn is not None
        while True:
            try:
                data = self.conn.recv(65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self.closed = True
                    self._cond.notify_all()
                    return
                self.buffer += data
                if self._log:
                    self._log.write(data)
                    self._log.flush()
                self._cond.notify_all()

    def text(self, start: int = 0) -> str:
        with self._cond:
            return self.buffer[start:].decode(errors="replace")

    def tail(self, n: int = 3000) -> str:
        return self.text(max(0, len(self.buffer) - n))

    def expect(self, pattern: str | bytes, timeout: float = 60.0) -> re.Match[bytes]:
        """Wait until `pattern` (a regex) appears after the previous match; returns the match."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(self.buffer, self.pos)
                if m:
                    self.pos = m.end()
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    why = "the guest's console closed" if self.closed else f"{timeout:.0f} s passed"
                    raise ConsoleTimeout(f"{why} before {rx.pattern!r} appeared; console tail:\n"
                                         f"{self.tail()}")
                self._cond.wait(min(left, 0.5))

    def send(self, data: bytes | str) -> None:
        if self.conn is None:
            raise RuntimeError("console not connected")
        self.conn.sendall(data.encode() if isinstance(data, str) else data)

    def sendline(self, line: str) -> None:
        self.send(line + "\n")

    def run(self, command: str, timeout: float = 60.0) -> tuple[int, str]:
        """Run a command in the guest's shell and return (exit status, output). The markers are split
        with quotes in what we type, so the terminal's echo of the command line cannot match them."""
        tag = f"{time.monotonic_ns() % 10**9}"
        self.sendline(f"echo '@@BEGIN''{tag}@@'; {command}; echo \"@@END{tag} $?\"'@@'")
        self.expect(rf"@@BEGIN{tag}@@\r?\n", timeout)
        start = self.pos
        m = self.expect(rf"@@END{tag} (\d+)@@", timeout)
        out = self.buffer[start:m.start()].decode(errors="replace").replace("\r\n", "\n")
        return int(m.group(1)), out

    def close(self) -> None:
        for s in (self.conn, self.server):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        if self._log:
            self._log.close()
            self._log = None
