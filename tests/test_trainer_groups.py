"""The trainer's all-equal-groups statistic (ClientStats.all_equal_group_frac), against its rewards."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fgrpo_core.config import EvaluationSettings, GrpoSettings, parse_config
from fgrpo_core.errors import TaskError
from fgrpo_core.families import generate_examples
from fgrpo_core.models import get_adapter, load_bundle
from fgrpo_core.partition import ClientData
from fgrpo_core.rewards import exact
from fgrpo_core.trainer import _RolloutTally, train_client


def test_tally_counts_groups_with_one_reward_by_hand() -> None:
    # Prepare: 3 groups of 4: all 0, mixed, all 1 (up to float noise)
    tally = _RolloutTally()
    rewards = [0.0] * 4 + [0.0, 1.0, 0.0, 0.0] + [1.0, 1.0, 1.0 + 1e-15, 1.0]
    # Execute
    tally.count_groups([5] * 4 + [7] * 4 + [2] * 4, rewards, 4)
    # Assert
    assert (tally.groups, tally.all_equal_groups) == (3, 2)
    with pytest.raises(TaskError, match="whole groups"):
        tally.count_groups([1, 1, 2, 2], [0.0] * 4, 4)


def test_train_client_reports_the_fraction_of_all_equal_groups(tmp_path: Path) -> None:
    # Prepare: a tiny model on add1 with its exact {0,1} reward, every reward recorded
    cfg = parse_config(
        {
            "name": "groups-test",
            "clients": [{"id": "c1", "families": ["add1"]}],
            "data": {"families": ["add1"]},
            "model": {"source": "tiny", "cache_dir": str(tmp_path / "models"), "tiny_warmup_steps": 150},
            "grpo": {"device": "cpu"},
        }
    )
    bundle = load_bundle(cfg)
    rng = random.Random(4)
    data = ClientData(
        client_id="c1",
        train=generate_examples("add1", 16, rng),
        val=generate_examples("add1", 8, rng),
        mix={"add1": 16},
    )
    grpo = GrpoSettings(
        local_steps=3, num_generations=4, per_device_train_batch_size=8, max_completion_length=4
    )
    seen: list[list[float]] = []

    def recording(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        rewards = exact(completions, **kwargs)
        if "prompt_index" in kwargs:  # a training batch (the evaluations call it too)
            seen.append([float(r) for r in rewards])
        return [float(r) for r in rewards]

    def constant(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [0.0] * len(completions)

    evaluation = EvaluationSettings(max_new_tokens=4, batch_size=8)
    adapter = get_adapter(bundle.model)
    # Execute
    varied = train_client(bundle, adapter, data, recording, (0.0, 1.0), grpo, evaluation, 1, 0, tmp_path)
    silent = train_client(bundle, adapter, data, constant, (0.0, 1.0), grpo, evaluation, 1, 0, tmp_path)
    # Assert: the reference is the recorded rewards cut into groups of num_generations
    groups = [batch[i : i + 4] for batch in seen for i in range(0, len(batch), 4)]
    expected = sum(len(set(g)) == 1 for g in groups) / len(groups)
    assert len(groups) == 3 * 2
    assert varied.stats.all_equal_group_frac == pytest.approx(expected)
    assert silent.stats.all_equal_group_frac == 1.0
