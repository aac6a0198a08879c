"""The config pin: what changes results is a change; more rounds, another store or reordering is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fgrpo_core.config import parse_config
from fgrpo_core.pinning import ConfigPin, ConfigPinError, check_pin, config_pin, differences
from tests.conftest import tiny_config


def _pin(tmp_path: Path, **sections: Any) -> ConfigPin:
    return config_pin(parse_config(tiny_config(tmp_path / "cache", tmp_path / "out", **sections)))


@pytest.mark.parametrize(
    ("sections", "named"),
    [
        ({"aggregation": {"strategy": "fedavg"}}, 'aggregation.strategy: "fgrpo" -> "fedavg"'),
        ({"grpo": {"learning_rate": 2e-3}}, "grpo.learning_rate: 0.001 -> 0.002"),
        ({"data": {"seed": 7}}, "data.seed: 0 -> 7"),
        (
            {
                "clients": [
                    {"id": "owner-a", "families": ["add1"], "n_train": 16, "n_val": 8},
                    {"id": "owner-b", "families": ["mul1"], "n_train": 16, "n_val": 8},
                    {"id": "owner-d", "families": ["add2"], "n_train": 16, "n_val": 8},
                ]
            },
            "clients.owner-c: owner removed",
        ),
    ],
)
def test_a_change_that_changes_results_is_named(tmp_path: Path, sections: dict[str, Any], named: str) -> None:
    # Prepare
    stored = _pin(tmp_path)
    # Execute
    changed = differences(stored, _pin(tmp_path, **sections))
    # Assert: the field is named, and check_pin says how to start a new experiment
    assert named in changed
    with pytest.raises(ConfigPinError, match=r"another `name:`"):
        check_pin("tiny-test", stored, _pin(tmp_path, **sections))


def test_rounds_store_tracking_and_owner_order_are_not_changes(tmp_path: Path) -> None:
    # Prepare
    stored = _pin(tmp_path)
    base = tiny_config(tmp_path / "cache", tmp_path / "out")
    # Execute
    current = _pin(
        tmp_path,
        federation={"rounds": 9, "round_timeout_s": 60.0, "mode": "embedded"},
        store={"kind": "local", "root": str(tmp_path / "elsewhere")},
        tracking={"enabled": False},
        clients=list(reversed(base["clients"])),
    )
    # Assert
    assert differences(stored, current) == []
    assert current.sha256 == stored.sha256


def test_a_setting_added_by_a_newer_fgrpo_counts_only_when_not_at_its_default(tmp_path: Path) -> None:
    # Prepare: a pin written before `aggregation.mu` and `clients.*.reward_shift` existed
    current = _pin(tmp_path)
    old = {
        k: v for k, v in current.settings.items() if k != "aggregation.mu" and not k.endswith("reward_shift")
    }
    stored = ConfigPin(sha256="0" * 64, settings=old)
    # Execute / Assert
    assert differences(stored, current) == []
    assert differences(stored, _pin(tmp_path, aggregation={"mu": 0.3})) == [
        'aggregation.mu: "<absent>" -> 0.3'
    ]
