"""The lean libpython (builder/leanpython.py) leaves builtin modules out; none may be one that the standard
library modules bankctl's network stage imports need when they are imported. Found by reading the
target's own stdlib (module-level imports, those under `if` and `try` too, followed through the stdlib):
`socket` imports `array` where the platform has sendmsg, and a libpython without it made every
`bankctl stage URL` and `bankctl poll` die with "No module named 'array'" in the guest."""

from __future__ import annotations

import ast
from pathlib import Path

from builder.board import load_board
from builder.leanpython import DROPPED
from builder.pysysroot import locate_sysroot

# What overlay_layout/net, initfs/poll*.py and initfs/identity.py import from the standard library.
ROOTS = ("socket", "select", "signal", "binascii", "time", "errno", "os", "ssl")


def module_level_imports(path: Path) -> set[str]:
    """Imports that run when the module is imported (not those inside functions or classes)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for part in ("body", "orelse", "finalbody"):
                    visit(getattr(node, part, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
    visit(ast.parse(path.read_text()).body)
    return found


def test_no_builtin_the_network_stage_imports_is_left_out() -> None:
    stdlib = locate_sysroot(load_board("qemu-aarch64").arch).root / "usr/lib/python3.11"
    seen: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = stdlib / f"{name}.py"
        if source.is_file():
            todo.extend(module_level_imports(source))
    assert "array" in seen  # socket's import, read from the target's socket.py
    assert not seen & set(DROPPED), sorted(seen & set(DROPPED))


def all_imports(path: Path) -> set[str]:
    """Every import in a module, those inside functions too (PyInstaller follows them all)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_what_the_tls_pieces_ssl_imports_is_in_the_frozen_program() -> None:
    """The TLS piece's ssl.py runs from source against the frozen program's modules, which PyInstaller
    collected by following our own imports (through the stdlib, not into freeze.EXCLUDES): each
    standard-library module ssl.py imports must be among them, named in freeze.HIDDEN_IMPORTS or carried by
    the piece itself (tlspiece.MODULES, base64 now; base64 was once none of these: every `bankctl stage URL`
    died in the guest with "No module named 'base64'"). What the piece's other modules import, too."""
    from builder.freeze import EXCLUDES, HIDDEN_IMPORTS
    from overlay_layout.net.tlspiece import MODULES

    stdlib = locate_sysroot(load_board("qemu-aarch64").arch).root / "usr/lib/python3.11"
    root = Path(__file__).resolve().parents[2]
    todo: list[str] = [*HIDDEN_IMPORTS]
    for package in ("initfs", "overlay_layout"):
        for source in (root / package).rglob("*.py"):
            todo.extend(all_imports(source))
    bundled: set[str] = set()
    while todo:
        name = todo.pop()
        if name in bundled or name in EXCLUDES:
            continue
        bundled.add(name)
        for source in (stdlib / f"{name}.py", stdlib / name / "__init__.py"):
            if source.is_file():
                todo.extend(all_imports(source))
    needed = {m for piece in MODULES for m in module_level_imports(stdlib / f"{piece}.py")
              if (stdlib / f"{m}.py").is_file() or (stdlib / m).is_dir()}
    assert "base64" in needed and "base64" in MODULES
    assert not needed - bundled - set(MODULES), sorted(needed - bundled - set(MODULES))
