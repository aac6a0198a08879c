"""The benchmark's new scenarios and their measured preconditions (bench/preconditions.py), by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import preconditions, scenarios
from bench.mislabel import off_by_one
from fgrpo_core.client_rewards import client_reward
from fgrpo_core.config import parse_config
from fgrpo_core.partition import client_data


def _config(scenario: str, arm: str = "fgrpo") -> dict[str, Any]:
    base = scenarios.base_config(scenario, "tiny", scenarios.BUDGETS["quick"], 1, "/tmp/cache", "/tmp/out")
    return scenarios.with_arm(
        base, next(a for a in scenarios.arms_for(scenario, True, False) if a.name == arm)
    )


def test_silent_owners_hold_two_digit_problems_scored_by_exact_match(tmp_path: Path) -> None:
    # Prepare
    raw = scenarios.base_config("silent", "tiny", scenarios.BUDGETS["quick"], 1, "/tmp/cache", str(tmp_path))
    # Execute
    written = scenarios.write_local_datasets(raw)
    again = [p.read_text() for p in scenarios.write_local_datasets(raw)]
    cfg = parse_config(raw)
    data = {c.id: client_data(cfg, c.id) for c in cfg.clients}
    # Assert: 5 owners; the 2 silent ones have 3-digit answers, the {0,1} exact reward, no format term
    assert [c.id for c in cfg.clients][-2:] == ["silent-add3", "silent-sub3"]
    assert cfg.data.families == ["add1", "mul1", "sub1"]  # the warm-up, hence the base model, unchanged
    assert [p.read_text() for p in written] == again
    for spec in cfg.clients[-2:]:
        _, lo_hi = client_reward(spec, spec.families)
        assert spec.reward == "exact" and lo_hi == (0.0, 1.0)
        examples = [*data[spec.id].train, *data[spec.id].val]
        assert len(examples) == spec.n_train + spec.n_val
        assert all(100 <= e.answer <= 999 and e.family in ("add1", "sub1") for e in examples)


def test_mislabelled_owner_rewards_the_answer_plus_one() -> None:
    # Prepare
    cfg = parse_config(_config("mislabelled"))
    wrong = cfg.clients[-1]
    fn, _ = client_reward(wrong, wrong.families)
    # Execute
    rewards = fn(["8", "7", "x"], answer=[7, 7, 7])
    # Assert
    assert (wrong.id, wrong.families, len(cfg.clients)) == ("wrong-add1", ["add1"], 4)
    assert rewards == [1.0, 0.0, 0.0] == off_by_one(["8", "7", "x"], answer=[7, 7, 7])


def test_every_scenario_has_the_robust_probe_and_first_round_arms() -> None:
    # Execute
    names = {s: [a.name for a in scenarios.arms_for(s, True, False)] for s in scenarios.SCENARIOS}
    # Assert
    want = {"fgrpo", "fgrpo-probe", "fedavg", "trimmed_mean", "median", "reward", "local", "central"}
    for arms in names.values():
        extra = {"fgrpo:scale_start=first_round", "fgrpo:gain_n=informative", "fgrpo-probe:exclude"}
        assert want | extra == set(arms)
    assert _config("silent", "fgrpo:scale_start=first_round")["aggregation"]["scale_start"] == "first_round"


def _owner(cid: str, frac: float, norm: float, r_pre: float, r_post: float, add1: float) -> dict[str, Any]:
    return {
        "client_id": cid,
        "all_equal_group_frac": frac,
        "delta_norm": norm,
        "r_pre": r_pre,
        "r_post": r_post,
        "families": {"add1": {"accuracy": add1}},
    }


def _local(rounds: list[list[dict[str, Any]]], add1_initial: float) -> dict[str, Any]:
    return {
        "kind": "local",
        "initial": {"families": {"add1": {"accuracy": add1_initial}}},
        "rounds": [{"owners": owners, "macro_accuracy": 0.3} for owners in rounds],
    }


def test_silent_checks_by_hand() -> None:
    # Prepare: 2 rounds; silent groups 1.0 and 0.5 (mean 0.75 < 0.8); norms 0.1 vs learners' 2.0
    rounds = [
        [_owner("owner-add1", 0.1, 2.0, 0, 0, 0), _owner("silent-add2", 1.0, 0.0, 0, 0, 0)],
        [_owner("owner-add1", 0.1, 2.0, 0, 0, 0), _owner("silent-add2", 0.5, 0.2, 0, 0, 0)],
    ]
    runs = {"local": {1: _local(rounds, 0.5)}}
    # Execute
    groups, norms = preconditions.scenario_checks("silent", runs, [1])
    # Assert
    assert groups.mean == pytest.approx(0.75) and not groups.held
    assert norms.mean == pytest.approx(0.1 / 2.0) and norms.held
    assert "FAILED" in groups.line() and "held on 0/1 seeds" in groups.line()


@pytest.mark.parametrize(("last_add1", "held"), [(0.3, True), (0.6, False)])
def test_mislabelled_checks_read_own_reward_and_true_accuracy(last_add1: float, held: bool) -> None:
    # Prepare: own reward 0.1 -> 0.4 over two rounds; add1 starts at 0.5
    rounds = [
        [_owner("wrong-add1", 0, 1, 0.1, 0.2, 0.45)],
        [_owner("wrong-add1", 0, 1, 0.2, 0.4, last_add1)],
    ]
    runs = {"local": {1: _local(rounds, 0.5)}}
    # Execute
    rise, fall = preconditions.scenario_checks("mislabelled", runs, [1])
    # Assert
    assert rise.mean == pytest.approx(0.3) and rise.held
    assert fall.mean == pytest.approx(last_add1 - 0.5) and fall.held is held


def test_status_flags_a_failed_precondition_and_no_separation() -> None:
    # Prepare: silent groups 0.5 (fails); the best federated arm is 1 point above local-only
    owners = [_owner("owner-add1", 0.0, 2.0, 0, 0, 0), _owner("silent-add2", 0.5, 0.0, 0, 0, 0)]
    local = _local([owners], 0.5)
    fed = {"kind": "strategy", "rounds": [{"macro_accuracy": 0.31}]}
    runs = {"local": {1: local}, "fedavg": {1: fed}}
    # Execute
    cell = preconditions.status("silent", runs, [1])
    # Assert
    assert "tests nothing" in cell and "cannot separate strategies" in cell and "+0.010" in cell
