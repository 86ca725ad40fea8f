"""Running host tools: every call goes through `run`, so a failure names the command, its exit status
and the tail of what it printed, and a missing tool says how to get it (mkosi's run() is the model).
Programs of another architecture run under qemu-user (`target_runner`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from builder.arch import Arch, is_native
from builder.errors import BuildError

TAIL = 2000  # characters of a failed command's output kept in the error


class CommandError(BuildError):
    pass


def find_tool(name: str, package: str | None = None, error: type[Exception] = CommandError) -> str:
    """The tool's path (PATH, then /sbin and /usr/sbin, which a non-root PATH lacks)."""
    found = shutil.which(name) or next((f"{d}/{name}" for d in ("/sbin", "/usr/sbin") if Path(f"{d}/{name}").exists()),
                                       None)
    if found is None:
        how = f"Debian package {package}; " if package else ""
        raise error(f"{name} is not installed ({how}make deps installs it)")
    return found


def run(cmd: list[str], *, error: type[Exception] = CommandError, package: str | None = None,
        ok: tuple[int, ...] = (0,), what: str | None = None, text: bool = True, check: bool = True,
        **kw) -> subprocess.CompletedProcess:
    """Run `cmd` (its first word looked up with find_tool), capturing its output. An exit status not in
    `ok` raises `error` naming `what` (else the command line), the status and the output's tail, unless
    check=False (the caller judges the result itself)."""
    argv = [cmd[0] if "/" in cmd[0] else find_tool(cmd[0], package, error), *map(str, cmd[1:])]
    proc = subprocess.run(argv, capture_output=True, text=text, **kw)
    if check and proc.returncode not in ok:
        out = proc.stderr or proc.stdout or ""
        out = (out.decode(errors="replace") if isinstance(out, bytes) else out).strip()
        name = what or " ".join(str(c) for c in cmd)
        raise error(f"{name} failed (exit {proc.returncode})" + (f":\n{out[-TAIL:]}" if out else ""))
    return proc


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 5.0) -> None:
    """A server we started (nginx, SeaweedFS): SIGTERM, then SIGKILL after `grace` seconds; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def target_runner(arch: Arch, root: Path | None = None) -> list[str]:
    """How the host starts a program built for `arch`: directly, or under qemu-user (with `root` as the
    sysroot its dynamic loader and libraries come from)."""
    if is_native(arch):
        return []
    return [find_tool(arch.qemu_user, "qemu-user-static"), *(["-L", str(root)] if root else [])]
