"""Config: unknown keys rejected, invariants checked, errors name the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fgrpo_core.config import ExperimentConfig, load_config, parse_config
from fgrpo_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _minimal(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"name": "t", "clients": [{"id": "a"}, {"id": "b"}]}
    cfg.update(overrides)
    return cfg


def test_defaults_are_valid_and_documented() -> None:
    # Execute
    cfg = parse_config(_minimal())
    # Assert: SPEC §2 defaults, and every field of every section has a description.
    agg = cfg.aggregation
    assert (agg.baseline_beta, agg.gain_deadzone, agg.tau, agg.gain_clip, agg.lam, agg.mu) == (
        0.7,
        1.0,
        1.0,
        3.0,
        1.0,
        0.1,
    )
    assert (agg.gain_scale, agg.gain_reference, agg.strategy) == ("stderr", "round_start", "fgrpo")
    for section in ExperimentConfig.model_fields:
        model = type(getattr(cfg, section))
        if hasattr(model, "model_fields"):
            for name, field in model.model_fields.items():
                assert field.description, f"{section}.{name} has no description"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_minimal(bogus=1), "bogus"),
        (_minimal(grpo={"learnin_rate": 1e-3}), "grpo.learnin_rate"),
        (_minimal(grpo={"num_generations": 1}), "grpo.num_generations"),
        (
            _minimal(grpo={"num_generations": 4, "per_device_train_batch_size": 6}),
            "per_device_train_batch_size",
        ),
        (_minimal(grpo={"learning_rate": "fast"}), "grpo.learning_rate"),
        (_minimal(clients=[{"id": "a"}, {"id": "a"}]), "duplicate client ids"),
        (_minimal(clients=[{"id": "Bad Id"}]), "clients.0.id"),
        (_minimal(clients=[{"id": "a", "families": ["nope"]}]), "clients[a].families"),
        (_minimal(aggregation={"gain_reference": "history"}), "gain_scale"),
        (_minimal(aggregation={"lora_aggregation": "freeze_a"}), "lora.freeze_a"),
        (_minimal(federation={"min_clients": 3}), "federation.min_clients"),
        (_minimal(model={"source": "local"}), "model.path"),
        (_minimal(aggregation={"mu": 1.5}), "aggregation.mu"),
    ],
)
def test_errors_name_the_field(data: dict[str, Any], field: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    # Assert
    assert field in str(info.value)


def test_every_error_is_listed() -> None:
    # Prepare: two independent mistakes.
    data = _minimal(grpo={"learning_rate": -1.0}, evaluation={"batch_size": 0})
    # Execute
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    # Assert
    assert "grpo.learning_rate" in str(info.value)
    assert "evaluation.batch_size" in str(info.value)


def test_load_config_errors(tmp_path: Path) -> None:
    # Prepare
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    # Execute / Assert
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad_yaml)
    with pytest.raises(ConfigError, match="mapping"):
        load_config(not_mapping)


@pytest.mark.parametrize("name", ["tiny.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    # Execute
    cfg = load_config(REPO / "configs" / name)
    # Assert
    assert len(cfg.clients) >= 3
    assert cfg.federation.rounds >= 2


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_minimal(data={"families": ["add1", "calculus"]}), "data.families"),
        (_minimal(clients=[{"id": "a", "reward": "no_such_reward"}]), "clients.0.reward"),
    ],
)
def test_unknown_task_or_reward_names_the_field(data: dict[str, Any], field: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    # Assert: the field path and the valid names to pick from.
    assert field in str(info.value)
    assert "exact" in str(info.value) or "add1" in str(info.value)
