"""What each folder may import, read from the sources: the product's builder never reaches into the lab
(builder/lab/: QEMU boots, benchmarks, the fault campaign, the labs) but for the command line's lab commands,
and the init reaches nothing of the network stage (overlay_layout/net: bankctl imports it only to stage or
poll from a URL), however deep it follows its imports, in functions too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("builder", "initfs", "overlay_layout")
# The one product module that imports the lab: `bankboot qemu`, `faults`, `bench`, ... are its commands.
LAB_DOORS = {"builder.cli"}



def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours `name` imports, anywhere in it (PyInstaller and a run alike follow them all)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in known}


def test_the_product_does_not_import_the_lab() -> None:
    known = module_files()
    product = [m for m in known if m.startswith("builder") and not m.startswith("builder.lab") and m not in LAB_DOORS]
    reaching = {m: sorted(i for i in imports_of(m, known[m], known) if i.startswith("builder.lab"))
                for m in product}
    assert not {m: i for m, i in reaching.items() if i}


def test_the_init_imports_nothing_of_the_network_stage() -> None:
    known = module_files()
    seen: set[str] = set()
    todo = ["initfs.main"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports_of(name, known[name], known))
    assert "overlay_layout.state" in seen and "initfs.bootflow" in seen  # the walk is followed
    assert not {m for m in seen if m.startswith("overlay_layout.net")}
    assert "initfs.bankctl" not in seen
