"""fgrpo_core must import without Prefect, boto3 or MLflow (SPEC: the core is pure)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ("prefect", "boto3", "botocore", "mlflow")


def test_core_imports_with_orchestration_modules_blocked() -> None:
    # Prepare: a child interpreter in which the blocked packages look absent. A None entry in
    # sys.modules makes `import x` raise ImportError and importlib.util.find_spec(x) return None,
    # so optional-backend probes (accelerate, transformers) behave as on a machine without them.
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        for name in {BLOCKED!r}:
            sys.modules[name] = None
        import fgrpo_core
        names = [m.name for m in pkgutil.iter_modules(fgrpo_core.__path__)]
        for n in names:
            importlib.import_module(f"fgrpo_core.{{n}}")
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r} and sys.modules[m] is not None)
        assert not leaked, leaked
        print(len(names))
        """
    )
    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    # Assert
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) >= 10


def test_core_sources_do_not_import_orchestration() -> None:
    # Prepare
    import ast
    from pathlib import Path

    core = Path(__file__).resolve().parents[1] / "fgrpo_core"
    offenders = []
    # Execute
    for path in sorted(core.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in BLOCKED]
    # Assert
    assert offenders == []
