"""The champion a tiny run registered loads in a fresh process, from another directory, in one call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fgrpo_app.cli import app
from tests.conftest import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pull_champion_then_load_and_generate_elsewhere(
    tmp_path: Path, model_cache: Path, prefect_harness: None
) -> None:
    # Prepare: a 1-round tiny experiment registered in MLflow (SQLite).
    out = tmp_path / "exp"
    cfg = tiny_config(
        model_cache,
        out,
        name="pull-test",
        model={"tiny_warmup_steps": 0},  # loading is tested here, not skill: no warm-up
        federation={"rounds": 1, "min_clients": 1},
        clients=[{"id": "owner-a", "families": ["add1"], "n_train": 8, "n_val": 4}],
    )
    config = out / "tiny.yaml"
    out.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(cfg))
    ran = CliRunner().invoke(app, ["run", "--config", str(config), "--json"])
    assert ran.exit_code == 0, ran.output + repr(ran.exception)
    # Execute: pull the champion, then run the printed call in a fresh process and another cwd.
    dest = tmp_path / "pulled"
    pulled = CliRunner().invoke(
        app, ["pull", "pull-test", "--alias", "champion", "--out", str(dest), "--config", str(config)]
    )
    assert pulled.exit_code == 0, pulled.output + repr(pulled.exception)
    load = "\n".join(line for line in pulled.stdout.splitlines() if not line.startswith("#"))
    script = load + (
        "\nimport json, torch\n"
        "ids = tokenizer('3+4=', return_tensors='pt').input_ids\n"
        "gen = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)\n"
        "print(json.dumps({'type': type(model).__name__, 'new_tokens': gen.shape[1] - ids.shape[1],"
        " 'lora': sum('lora_' in n for n, _ in model.named_parameters())}))\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of fgrpo needed
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    # Assert: a PeftModel with LoRA layers on the tiny base, generating from the pulled folder.
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["type"] == "PeftModelForCausalLM" and result["lora"] > 0 and result["new_tokens"] >= 1
    written = json.loads(next(dest.rglob("adapter_config.json")).read_text())
    assert Path(written["base_model_name_or_path"]).is_absolute()
    assert "PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(" in pulled.stdout
    # The version's tags name its base and bytes: the store's theta_1, printed by pull.
    manifest = json.loads(
        (out / "store" / "fgrpo" / "pull-test" / "global" / "round-0001" / "manifest.json").read_text()
    )
    assert "# base model tiny-llama-" in pulled.stdout
    assert f"adapter sha256 {manifest['sha256']}" in pulled.stdout
