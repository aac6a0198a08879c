"""Rewards from a file path with a declared range, several with weights, counted out of range."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fgrpo_core.client_rewards import client_reward
from fgrpo_core.config import load_config, parse_config
from fgrpo_core.errors import ConfigError
from fgrpo_core.families import Example
from fgrpo_core.models import load_bundle
from fgrpo_core.partition import ClientData
from fgrpo_core.trainer import train_client

REWARD_FILE = '''
def length_bonus(completions, answer, **kwargs):
    """5 for the exact answer, -2 otherwise: a range of [-2, 5], not [0, 1]."""
    return [5.0 if str(c).strip() == a else -2.0 for c, a in zip(completions, answer)]


def too_loud(completions, **kwargs):
    return [100.0 for _ in completions]
'''


def _config_dir(tmp_path: Path, client: dict[str, object]) -> Path:
    (tmp_path / "cfg" / "rewards").mkdir(parents=True)
    (tmp_path / "cfg" / "rewards" / "mine.py").write_text(REWARD_FILE)
    path = tmp_path / "cfg" / "exp.yaml"
    path.write_text(
        yaml.safe_dump({"name": "r", "clients": [{"id": "own", **client}], "data": {"families": ["add1"]}})
    )
    return path


def test_file_reward_is_relative_to_the_config_file_and_keeps_its_declared_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: run from elsewhere, so only the config file's folder can resolve the path.
    path = _config_dir(tmp_path, {"reward": "rewards/mine.py:length_bonus", "reward_range": [-2, 5]})
    monkeypatch.chdir(tmp_path)
    # Execute
    cfg = load_config(path)
    fn, lo_hi = client_reward(cfg.clients[0], [""])
    # Assert: the path is stored absolute (owners receive it so); the declared range is the range.
    assert cfg.clients[0].reward == f"{(tmp_path / 'cfg' / 'rewards' / 'mine.py').resolve()}:length_bonus"
    assert lo_hi == (-2.0, 5.0)
    assert fn(["7", "8"], answer=["7", "7"]) == [5.0, -2.0]


def test_user_reward_without_a_range_and_bad_names_fail_validation(tmp_path: Path) -> None:
    # Prepare
    path = _config_dir(tmp_path, {"reward": "rewards/mine.py:length_bonus"})
    # Execute / Assert: each message says what to fix.
    with pytest.raises(
        ConfigError, match=r"not a registry reward: declare its range as reward_range: \[lo, hi\]"
    ):
        load_config(path)
    base = {"name": "r", "data": {"families": ["add1"]}}
    with pytest.raises(ConfigError, match="defines no function 'nope'"):
        load_config(_rewrite(path, {"reward": "rewards/mine.py:nope", "reward_range": [0, 1]}))
    with pytest.raises(ConfigError, match=r"cannot import module .*validating the config imports"):
        parse_config({**base, "clients": [{"id": "a", "reward": "no_pkg.mod:fn", "reward_range": [0, 1]}]})
    with pytest.raises(ConfigError, match=r"no file .*relative to the config file"):
        parse_config({**base, "clients": [{"id": "a", "reward": "absent.py:fn", "reward_range": [0, 1]}]})
    with pytest.raises(ConfigError, match="lo < hi"):
        parse_config({**base, "clients": [{"id": "a", "reward": "exact", "reward_range": [1, 0]}]})
    with pytest.raises(ConfigError, match="one weight per function"):
        parse_config({**base, "clients": [{"id": "a", "reward": ["exact"], "reward_weights": [1, 2]}]})


def _rewrite(path: Path, client: dict[str, object]) -> Path:
    data = yaml.safe_load(path.read_text())
    data["clients"] = [{"id": "own", **client}]
    path.write_text(yaml.safe_dump(data))
    return path


def test_several_registry_rewards_are_weighted_like_trl() -> None:
    # Prepare
    cfg = parse_config(
        {
            "name": "r",
            "data": {"families": ["add1"]},
            "clients": [{"id": "a", "reward": ["exact", "format_penalty"], "reward_weights": [2.0, -1.0]}],
        }
    )
    # Execute
    fn, lo_hi = client_reward(cfg.clients[0], ["add1"])
    # Assert: 2 * exact - format_penalty, against a reference by hand; its range from the parts.
    assert fn(["7", "6", "x"], answer=[7, 7, 7]) == [2 * 1 - 1, 2 * 0 - 0, 2 * 0 + 1]
    assert lo_hi == (-1.0, 3.0)


def test_rewards_outside_the_declared_range_are_counted_in_the_stats(
    tmp_path: Path, model_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a reward of 100 everywhere, declared as [0, 1]; a tiny model and TRL-format data.
    path = _config_dir(tmp_path, {"reward": "rewards/mine.py:too_loud", "reward_range": [0, 1]})
    data = yaml.safe_load(path.read_text())
    data["model"] = {"source": "tiny", "cache_dir": str(model_cache), "tiny_warmup_steps": 0}
    data["grpo"] = {
        "device": "cpu",
        "local_steps": 1,
        "num_generations": 2,
        "per_device_train_batch_size": 4,
        "max_completion_length": 2,
    }
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    rows = [
        Example(f"{i}+1", str(i + 1), "", prompt=f"{i}+1=", columns={"answer": str(i + 1)}) for i in range(6)
    ]
    own = ClientData("own", rows[:4], rows[4:], {"": 4})
    fn, lo_hi = client_reward(cfg.clients[0], [""])
    bundle = load_bundle(cfg)
    # Execute
    result = train_client(
        bundle, bundle.initial_adapter, own, fn, lo_hi, cfg.grpo, cfg.evaluation, 0, 0, tmp_path / "run"
    )
    # Assert: 1 step x 4 completions + 2 validation prompts before and after; warned, in the manifest.
    assert result.stats.rewards_out_of_range == 4 + 2 + 2
    assert "outside the declared range [0, 1]" in caplog.text
    assert json.loads(result.stats.model_dump_json())["rewards_out_of_range"] == 8
