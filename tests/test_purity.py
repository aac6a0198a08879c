"""fgrpo_core must import without Prefect, boto3 or MLflow (SPEC: the core is pure)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_core_imports_with_orchestration_modules_blocked() -> None:
    # Prepare: a child interpreter whose import system refuses the forbidden packages.
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        BLOCKED = ("prefect", "boto3", "botocore", "mlflow")
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"fgrpo_core imported {name}")
                return None
        sys.meta_path.insert(0, Blocker())
        import fgrpo_core
        names = [m.name for m in pkgutil.iter_modules(fgrpo_core.__path__)]
        for n in names:
            importlib.import_module(f"fgrpo_core.{n}")
        print(len(names))
        """
    )
    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    # Assert
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 3
