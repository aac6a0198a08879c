"""The packages form layers that import only downwards (docs/design.md, STYLE.md).

    fgrpo_core (pure) <- fgrpo_io (store, exchange, tracking, ...) <- tasks <- flows <- fgrpo_app

bench/ and tests/ sit above everything. Lazy imports inside functions count as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["fgrpo_core", "fgrpo_io", "tasks", "flows", "fgrpo_app", "bench"]


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every project package that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


def upward_imports(root: Path) -> list[str]:
    """'file: package' for every import of a package above the file's own layer."""
    offenders = []
    for rank, package in enumerate(LAYERS):
        for path in sorted((root / package).rglob("*.py")):
            above = {p for p in imported_packages(path) if LAYERS.index(p) > rank}
            offenders += [f"{path.relative_to(root)}: {p}" for p in sorted(above)]
    return offenders


def test_no_package_imports_a_layer_above_it() -> None:
    # Prepare: the project's own tree
    # Execute
    offenders = upward_imports(ROOT)
    # Assert
    assert offenders == []


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    # Prepare: a core module importing the I/O layer lazily, and an I/O module importing a task
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / "fgrpo_core" / "bad.py").write_text("def f():\n    from fgrpo_io import store\n")
    (tmp_path / "fgrpo_io" / "bad.py").write_text("import tasks.train\n")
    (tmp_path / "flows" / "ok.py").write_text("from tasks import train\nfrom fgrpo_core import gains\n")
    # Execute
    offenders = upward_imports(tmp_path)
    # Assert
    assert offenders == ["fgrpo_core/bad.py: fgrpo_io", "fgrpo_io/bad.py: tasks"]
