"""The README's example config validates, and `fgrpo check` passes it or names each owner's problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from fgrpo_app.cli import app
from fgrpo_core.config import ExperimentConfig
from fgrpo_core.preflight import preflight
from tests.byo_helpers import save_arch_model

EXAMPLE = Path(__file__).resolve().parent.parent / "configs" / "byo-example.yaml"
CHAT = "{% for m in messages %}{{ m['content'] }}={% endfor %}"


def _example_with_local_model(tmp_path: Path, **client_a: Any) -> Path:
    """The example with its Hub model swapped for a tiny local Qwen2 (no download in tests)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["model"] = {"source": "local", "path": str(save_arch_model("qwen2", tmp_path / "qwen", CHAT))}
    data["output_dir"] = str(tmp_path / "runs")
    owner = data["clients"][0]
    owner["data_path"] = str((EXAMPLE.parent / owner["data_path"]).resolve())
    owner["reward"] = [
        str((EXAMPLE.parent / owner["reward"][0].split(":")[0]).resolve()) + ":correct_sum",
        "format_penalty",
    ]
    owner.update(client_a)
    path = tmp_path / "byo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_example_config_validates_and_passes_check(tmp_path: Path) -> None:
    # Prepare
    runner = CliRunner()
    path = _example_with_local_model(tmp_path)
    # Execute
    validated = runner.invoke(app, ["validate-config", str(EXAMPLE)])
    checked = runner.invoke(app, ["check", str(path)])
    # Assert
    assert validated.exit_code == 0, validated.output
    assert checked.exit_code == 0, checked.output
    assert "ready (2 owner(s): owner-a, owner-b)" in checked.output


def test_check_names_each_owners_problem_and_exits_non_zero(tmp_path: Path) -> None:
    # Prepare: owner-a's file lacks the prompt column.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_text": "1+1", "answer": "2"}\n' * 12)
    path = _example_with_local_model(tmp_path, data_path=str(bad))
    # Execute
    checked = CliRunner().invoke(app, ["check", str(path), "--client", "owner-a"])
    # Assert: the file, the record and what to fix; only owner-a checked.
    assert checked.exit_code == 1
    assert f"problem: clients[owner-a] (data): {bad} line 1: no 'prompt' column" in checked.output
    assert "owner-b" not in checked.output


def test_preflight_reports_a_reward_outside_its_range_and_a_missing_reward(tmp_path: Path) -> None:
    # Prepare: a declared range that the reward exceeds; an owner of own data without a reward.
    path = _example_with_local_model(tmp_path, reward_range=[-1.0, 1.0])
    cfg = yaml.safe_load(path.read_text())
    cfg["clients"].append({"id": "owner-c", "data_path": cfg["clients"][0]["data_path"], "n_val": 4})
    # Execute
    problems = preflight(ExperimentConfig.model_validate(cfg))
    # Assert
    assert [(p.client_id, p.kind) for p in problems] == [("owner-a", "reward"), ("owner-c", "reward")]
    assert "returned 1.5, outside its range [-1.0, 1.0]" in problems[0].message
    assert "no 'family' column" in problems[1].message and "set clients[].reward" in problems[1].message
