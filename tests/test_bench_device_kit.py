"""bench/device_kit.py: the pins it carries, the random-weight model, the step-time table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from bench import device_kit
from fgrpo_core.base_models import build_tiny_tokenizer


def test_pins_come_from_the_lock_with_pip_name_rules(tmp_path: Path) -> None:
    # Prepare
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\nPyYAML==6.0.4\ntyping_extensions==4.16.0 ; python_version >= '3.9'\n")
    # Execute
    pins = device_kit.pinned_versions(lock, ("pyyaml", "typing-extensions"))
    # Assert
    assert pins == {"pyyaml": "6.0.4", "typing-extensions": "4.16.0"}
    with pytest.raises(SystemExit, match=r"pins no version of \['trl'\]"):
        device_kit.pinned_versions(lock, ("pyyaml", "trl"))


def test_every_carried_package_is_pinned_by_the_project_lock() -> None:
    # Execute
    pins = device_kit.pinned_versions(device_kit.REPO / "requirements.lock", device_kit.CARRIED)
    # Assert
    assert set(pins) == set(device_kit.CARRIED) and all(pins.values())


def test_random_model_has_the_source_architecture_and_tokenizer(tmp_path: Path) -> None:
    # Prepare: a small Llama config and a tokenizer stand in for SmolLM2's
    source, out = tmp_path / "arch", tmp_path / "random"
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    config.save_pretrained(source)
    tokenizer.save_pretrained(source)
    # Execute
    device_kit.random_model(source, out, seed=0)
    model = AutoModelForCausalLM.from_pretrained(out)
    # Assert: same shapes as the config says, every tokenizer file copied, weights not all zero
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    assert {p.name for p in source.iterdir()} <= {p.name for p in out.iterdir()}
    assert any(bool(torch.any(p != 0)) for p in model.parameters())


def test_summary_divides_the_cpu_step_time_by_each_device(tmp_path: Path) -> None:
    # Prepare
    base = {"model": "smollm2", "weights": "random", "bf16": False, "first_step_s": 1.0}
    runs = {
        "cpu": {**base, "device": "cpu", "torch_threads": 16, "s_per_step_after_first": 6.0},
        "cuda": {**base, "device": "cuda", "torch_threads": 16, "s_per_step_after_first": 0.5},
    }
    for name, run in runs.items():
        (tmp_path / f"step-time-smollm2-random-{name}.json").write_text(json.dumps(run))
    # Execute
    table = device_kit.summary(tmp_path)
    # Assert
    assert "| smollm2 | random | cuda | False | 16 | 0.500 | 1.00 | 12.0× |" in table
    assert "| smollm2 | random | cpu | False | 16 | 6.000 | 1.00 | 1.0× |" in table
