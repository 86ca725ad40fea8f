"""Kernel-module closure and load order from modules.dep, the file depmod writes. Only the modules a
board names, plus what they depend on, go into the initramfs."""

from __future__ import annotations

import difflib
from pathlib import Path

from builder.errors import BuildError
from builder.run import find_tool, run


class ModuleError(BuildError):
    pass


def module_name(path: str) -> str:
    """`kernel/fs/ext4/ext4.ko.xz` -> `ext4`; '-' and '_' are the same to the kernel."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def read_modules_dep(modules_dir: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (relative path, [relative paths of dependencies as depmod lists them])."""
    dep_file = modules_dir / "modules.dep"
    if not dep_file.is_file():
        raise ModuleError(f"{dep_file} does not exist (run depmod, `make deps` does it for Debian kernels)")
    result: dict[str, tuple[str, list[str]]] = {}
    for lineno, line in enumerate(dep_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise ModuleError(f"{dep_file}:{lineno}: not a modules.dep line: {line!r}")
        path, deps = line.split(":", 1)
        result[module_name(path)] = (path.strip(), deps.split())
    return result


def read_builtin(modules_dir: Path) -> set[str]:
    f = modules_dir / "modules.builtin"
    if not f.is_file():
        return set()
    return {module_name(line.strip()) for line in f.read_text().splitlines() if line.strip()}


def module_closure(modules_dir: Path, names: list[str] | tuple[str, ...]) -> list[str]:
    """Relative paths of the named modules and their dependencies, in an order that loads every
    dependency before the module that needs it, following the board's order otherwise. Built-in modules
    are skipped; an unknown name is an error with the closest matches."""
    deps = read_modules_dep(modules_dir)
    builtin = read_builtin(modules_dir)
    order: list[str] = []
    placed: set[str] = set()

    def place(name: str, chain: tuple[str, ...]) -> None:
        if name in placed:
            return
        if name in chain:
            raise ModuleError(f"dependency cycle: {' -> '.join((*chain, name))}")
        path, needs = deps[name]
        for dep in needs:
            place(module_name(dep), (*chain, name))
        placed.add(name)
        order.append(path)

    for raw in names:
        name = raw.replace("-", "_")
        if name in deps:
            place(name, ())
        elif name in builtin:
            continue
        else:
            close = difflib.get_close_matches(name, list(deps), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModuleError(f"module {raw!r} is neither in {modules_dir}/modules.dep nor built in{hint}")
    return order


def run_depmod(root: Path, version: str, system_map: Path | None = None) -> None:
    """depmod on a tree laid out as ROOT/lib/modules/VERSION (Debian kernel packages ship no modules.dep:
    their postinst makes it)."""
    cmd = [find_tool("depmod", "kmod", ModuleError), "-b", str(root)]
    if system_map is not None and system_map.is_file():
        cmd += ["-F", str(system_map)]
    cmd.append(version)
    run(cmd, error=ModuleError)
