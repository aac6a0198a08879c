"""The CLI refuses bad configs before it writes anything; the shipped configs validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fgrpo_app.cli import app
from tests.conftest import tiny_config


def _write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"bogus": 1}, "bogus"),
        ({"grpo": {"learning_rate": "fast"}}, "grpo.learning_rate"),
        ({"data": {"families": ["add1", "calculus"]}}, "data.families"),
        ({"clients": [{"id": "a", "reward": "nope"}, {"id": "b"}]}, "clients.0.reward"),
    ],
)
def test_cli_rejects_bad_config_and_writes_nothing(
    tmp_path: Path, model_cache: Path, change: dict[str, Any], needle: str
) -> None:
    # Prepare
    out = tmp_path / "out"
    cfg = tiny_config(model_cache, out)
    cfg.update(change)
    path = _write(tmp_path / "bad.yaml", cfg)
    # Execute
    for command in (["run", "--config", str(path)], ["validate-config", str(path)]):
        result = CliRunner().invoke(app, command)
        # Assert
        assert result.exit_code != 0
        assert needle in result.output
    assert not out.exists()


def test_cli_missing_config_file(tmp_path: Path) -> None:
    # Execute
    result = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "nope.yaml")])
    # Assert
    assert result.exit_code != 0
    assert "not found" in result.output


def test_validate_config_accepts_shipped_configs() -> None:
    # Execute
    result = CliRunner().invoke(app, ["validate-config", "configs/tiny.yaml"])
    # Assert
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
