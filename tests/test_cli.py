"""The `fgrpo` command's surface: config argument, errors that name what to fix, exit codes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from fgrpo_app.cli import app

TINY = "configs/tiny.yaml"


def test_python_m_cli_has_the_stack_sub_command(tmp_path: Path) -> None:
    # Execute: the module form, which used to run main() before `stack` was added.
    result = subprocess.run(
        [sys.executable, "-m", "fgrpo_app.cli", "stack", "status", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Assert
    assert result.returncode == 0, result.stderr
    assert f"no stack in {tmp_path}" in result.stdout


def test_config_is_positional_and_the_option_is_still_accepted() -> None:
    # Execute
    positional = CliRunner().invoke(app, ["validate-config", TINY])
    option = CliRunner().invoke(app, ["validate-config", "--config", TINY])
    # Assert
    assert positional.exit_code == option.exit_code == 0
    assert positional.output == option.output == f"{TINY}: valid (3 clients, 4 rounds)\n"


def test_run_without_a_config_or_with_two_is_a_usage_error() -> None:
    # Execute
    none = CliRunner().invoke(app, ["run"])
    two = CliRunner().invoke(app, ["run", TINY, "--config", "configs/demo.yaml"])
    # Assert: exit 2, before anything heavy starts.
    assert none.exit_code == 2 and "fgrpo run CONFIG" in none.output
    assert two.exit_code == 2 and "two configs given" in two.output


def test_yaml_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    # Prepare: line 3 opens a flow mapping that never closes.
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nclients:\n  - {id: a, n_train: 4\nseed: 1\n")
    # Execute
    result = CliRunner().invoke(app, ["validate-config", str(path)])
    # Assert
    assert result.exit_code == 2
    assert f"error: {path}:4:" in result.output and "not valid YAML" in result.output
    assert "<unicode string>" not in result.output


def test_invalid_field_names_the_file_and_the_field(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "wrong.yaml"
    path.write_text("name: x\nclients: [{id: a}]\ngrpo: {local_steps: 0}\n")
    # Execute
    result = CliRunner().invoke(app, ["validate-config", str(path)])
    # Assert
    assert result.exit_code == 2
    assert f"{path}: invalid config:" in result.output and "grpo.local_steps" in result.output


def test_missing_data_path_is_rejected_when_the_config_is_validated(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "local.yaml"
    missing = tmp_path / "nowhere.jsonl"
    path.write_text(f"name: x\nclients:\n  - {{id: a}}\n  - {{id: b, data_path: {missing}}}\n")
    # Execute
    result = CliRunner().invoke(app, ["validate-config", str(path)])
    # Assert
    assert result.exit_code == 2
    assert f"clients[b].data_path: {missing} does not exist" in result.output


def test_report_of_an_unknown_experiment_fails_before_mlflow_loads(tmp_path: Path) -> None:
    # Prepare: a fresh interpreter, so what the command imported is visible.
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom fgrpo_app.cli import app\n"
        f"r = CliRunner().invoke(app, ['report', 'nonexist', '--store-root', {str(tmp_path)!r}])\n"
        "print(r.exit_code, 'mlflow' in sys.modules, 'matplotlib' in sys.modules)\nprint(r.output)"
    )
    started = time.monotonic()
    # Execute
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    # Assert: exit 1, the store named, MLflow and matplotlib never imported (they took 19 s).
    assert result.returncode == 0, result.stderr
    first, message = result.stdout.split("\n", 1)
    assert first == "1 False False"
    assert "no round results of experiment 'nonexist'" in message
    assert time.monotonic() - started < 30


def test_report_takes_the_config_positionally(tmp_path: Path) -> None:
    # Prepare: a config whose store holds nothing yet.
    path = tmp_path / "empty.yaml"
    path.write_text(f"name: empty\nclients: [{{id: a}}]\nstore: {{kind: local, root: {tmp_path}}}\n")
    # Execute
    by_file = CliRunner().invoke(app, ["report", str(path)])
    by_name = CliRunner().invoke(app, ["report", "empty", str(path)])
    # Assert: both look for experiment `empty` in that store.
    for result in (by_file, by_name):
        assert result.exit_code == 1
        assert f"experiment 'empty' under file://{tmp_path}" in result.output


def test_help_documents_the_exit_codes() -> None:
    # Execute
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    # Assert
    assert result.exit_code == 0
    for words in (
        "Exit codes: 0 done",
        "1 the experiment failed",
        "2 bad usage or an invalid config",
        "3 the rounds ran but an owner failed permanently",
    ):
        assert words in " ".join(result.output.split())
    assert "ui" in result.output and "stack" in result.output
