"""No module of flows/ or tasks/ may share a name with an installed package.

Prefect puts an entrypoint's folder on ``sys.path`` when it loads a deployment's flow
(``flows/owner.py:owner_rounds``); from then on ``import distributed`` in that process found
``flows/distributed.py`` instead of Dask's package, and the owner worker processes failed to start.
"""

from __future__ import annotations

import sys
from importlib.machinery import PathFinder
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_no_flow_or_task_module_shadows_an_installed_package() -> None:
    # Prepare: the import path without the repository and its folders
    ours = {REPO, REPO / "flows", REPO / "tasks"}
    outside = [p for p in sys.path if p and Path(p).resolve() not in ours]
    names = sorted(
        p.stem for d in ("flows", "tasks") for p in (REPO / d).glob("*.py") if p.stem != "__init__"
    )
    # Execute: PathFinder looks at the path only (not at what is imported already)
    shadowed = {n: spec.origin for n in names if (spec := PathFinder.find_spec(n, outside)) is not None}
    # Assert (the check itself sees the package the old name shadowed)
    assert shadowed == {}, f"rename these modules: {shadowed}"
    assert PathFinder.find_spec("distributed", outside) is not None
