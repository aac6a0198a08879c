"""Every shell and Python block of README.md, run exactly as written on a tiny run's outputs.

The fresh directory holds what a clone has after `make`: `.venv` (a link to this interpreter's
environment) and `configs/demo.yaml`, here the tiny model on a small budget under the demo's
name, so the blocks' `demo` paths and model names are real. A block may be skipped only with
`<!-- test: skip (reason) -->` on the line before it; the list stays short.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fgrpo_app.cli import app
from tests.conftest import tiny_config

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"^<!-- test: skip \((?P<reason>.+)\) -->$")
# Owned by the deployment docs: its commands need a Prefect server, Docker and the owners' machines
# (tests/test_distributed.py and tests/test_infra.py cover them).
ACROSS_MACHINES = "## Run across machines"


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int
    section: str
    skip: str | None


def readme_blocks() -> list[Block]:
    """The fenced ```bash and ```python blocks, with their section and skip reason."""
    lines = README.read_text().splitlines()
    blocks, section, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line
        fence = re.match(r"^```(bash|python)$", line)
        if fence:
            end = lines.index("```", i + 1)
            before = lines[i - 1] if i else ""
            marker = SKIP.match(before)
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(fence.group(1), code, i + 1, section, marker and marker["reason"]))
            i = end
        i += 1
    return blocks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_skipped_blocks_are_few_and_say_why() -> None:
    # Execute
    blocks = [b for b in readme_blocks() if b.section != ACROSS_MACHINES]
    # Assert
    skipped = [b for b in blocks if b.skip]
    assert len(skipped) <= 3 and all(len(b.skip or "") > 20 for b in skipped)
    assert [b.language for b in blocks if not b.skip] == ["bash", "python"]


@pytest.mark.slow
def test_every_readme_block_runs_as_written(
    tmp_path: Path, model_cache: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a clone after `make`, then `fgrpo run configs/demo.yaml` (tiny, 2 rounds).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".venv").symlink_to(sys.prefix)
    (tmp_path / "configs").mkdir()
    cfg = tiny_config(model_cache, Path("runs"), name="demo", tracking={})
    (tmp_path / "configs" / "demo.yaml").write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", "configs/demo.yaml"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert re.search(r"registered model: fgrpo-demo \(.*champion -> v\d", result.output)
    # Execute + Assert: each block exits 0; the Python one writes only its champion/ folder.
    for block in readme_blocks():
        if block.skip or block.section == ACROSS_MACHINES:
            continue
        before = {p.name for p in tmp_path.iterdir()}
        cmd = ["bash", "-euo", "pipefail", "-c", block.code]
        if block.language == "python":
            cmd = [sys.executable, "-c", block.code]
        ran = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, f"README.md:{block.line}\n{ran.stdout}\n{ran.stderr}"
        if block.language == "python":
            assert {p.name for p in tmp_path.iterdir()} - before == {"champion"}
            assert "fgrpo-demo v" in ran.stdout and (tmp_path / "champion" / "adapter").is_dir()
    assert (tmp_path / "runs" / "demo" / "report.html").is_file()
    assert not (tmp_path / "mlflow.db").exists()
    # The skipped `fgrpo ui` block, with --check: both servers answer, the URLs are printed.
    mlflow_port, prefect_port = _free_port(), _free_port()
    ports = ["--port", str(mlflow_port), "--prefect-port", str(prefect_port)]
    ui = subprocess.run(
        [
            str(tmp_path / ".venv" / "bin" / "fgrpo"),
            "ui",
            "configs/demo.yaml",
            "--prefect",
            "--check",
            *ports,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ui.returncode == 0, ui.stdout + ui.stderr
    assert re.search(rf"MLflow UI: http://127.0.0.1:{mlflow_port}/#/experiments/\d+/runs", ui.stdout)
    assert f"registered model: http://127.0.0.1:{mlflow_port}/#/models/fgrpo-demo" in ui.stdout
    assert f"Prefect UI: http://127.0.0.1:{prefect_port}/runs" in ui.stdout
