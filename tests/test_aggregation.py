"""Aggregation weights against independent numpy references, and the server state by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fgrpo_core.aggregation import compute_weights
from fgrpo_core.config import AggregationSettings
from fgrpo_core.errors import AggregationError
from fgrpo_core.types import ClientHistory, ClientStats, ServerState
from tests.aggregation_helpers import make_stats, reference_fgrpo

# --- weights against references ------------------------------------------------------------------


def test_fedavg_weights_match_numpy() -> None:
    # Prepare
    stats = [make_stats(f"c{i}", n_k=n) for i, n in enumerate([10, 30, 60])]
    # Execute
    rows, _ = compute_weights(stats, ServerState(), AggregationSettings(strategy="fedavg"))
    # Assert
    np.testing.assert_allclose([r.weight for r in rows], np.array([10, 30, 60]) / 100, rtol=1e-12)


def test_reward_weights_shift_by_lowest_range_and_fall_back_to_fedavg() -> None:
    # Prepare: a [0, 10] client next to a [-1, 1] client
    loud = make_stats("loud", n_k=10, r_post=6.0, reward_lo=0.0, reward_hi=10.0)
    quiet = make_stats("quiet", n_k=30, r_post=0.5, reward_lo=-1.0, reward_hi=1.0)
    flat = [make_stats("a", n_k=1, r_post=0.0), make_stats("b", n_k=3, r_post=0.0)]
    cfg = AggregationSettings(strategy="reward", weight_cap=1.0)  # the rule itself, uncapped
    # Execute
    rows, _ = compute_weights([loud, quiet], ServerState(), cfg)
    flat_rows, _ = compute_weights(flat, ServerState(), cfg)
    # Assert: min_r = -1, products 10*7 and 30*1.5
    np.testing.assert_allclose([r.weight for r in rows], np.array([70.0, 45.0]) / 115.0, rtol=1e-12)
    np.testing.assert_allclose([r.weight for r in flat_rows], [0.25, 0.75], rtol=1e-12)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"gain_deadzone": 0.0, "tau": 2.0, "lam": 0.5, "mu": 0.3},
        {"gain_reference": "history", "gain_scale": "std"},
        {"scale_start": "first_round"},
    ],
)
def test_fgrpo_weights_match_numpy_reference_over_three_rounds(overrides: dict[str, Any]) -> None:
    # Prepare
    cfg = AggregationSettings(strategy="fgrpo", weight_cap=1.0, **overrides)
    round_1 = [
        make_stats("a", n_k=20, r_pre=0.1, r_post=0.3, sigma_diff=0.2),
        make_stats("b", n_k=40, r_pre=2.0, r_post=2.5, sigma=2.0, sigma_diff=1.5, reward_hi=10.0),
        make_stats("c", n_k=10, r_pre=0.5, r_post=0.45, sigma_diff=0.1, reward_lo=-1.0),
    ]
    round_2 = [
        make_stats("a", n_k=20, r_pre=0.3, r_post=0.6, sigma_diff=0.3),
        make_stats("c", n_k=10, r_pre=0.45, r_post=0.2, sigma_diff=0.3, reward_lo=-1.0),
        make_stats("d", n_k=25, r_pre=0.0, r_post=0.0, sigma_diff=0.0, sigma=0.0),
    ]
    # "d" was silent in round 2: its first informative round
    round_3 = [
        make_stats("a", n_k=20, r_pre=0.6, r_post=0.55, sigma_diff=0.2),
        make_stats("d", n_k=25, r_pre=0.0, r_post=0.25, sigma_diff=0.4, sigma=0.1),
    ]
    state = ServerState()
    for stats in (round_1, round_2, round_3):
        expected_gains, expected_weights = reference_fgrpo(stats, cfg, state)
        # Execute
        rows, state = compute_weights(stats, state, cfg)
        # Assert
        np.testing.assert_allclose([r.gain for r in rows], expected_gains, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose([r.weight for r in rows], expected_weights, rtol=1e-12)


def test_hard_task_improvement_outweighs_staying_high_on_an_easy_task() -> None:
    # Prepare
    hard = make_stats("hard", r_pre=0.1, r_post=0.3, sigma_diff=0.05, m=32)
    easy = make_stats("easy", r_pre=0.9, r_post=0.9, sigma_diff=0.05, m=32)
    # Execute
    fgrpo_rows, _ = compute_weights(
        [hard, easy], ServerState(), AggregationSettings(strategy="fgrpo", weight_cap=1.0)
    )
    reward_rows, _ = compute_weights(
        [hard, easy], ServerState(), AggregationSettings(strategy="reward", weight_cap=1.0)
    )
    # Assert: fgrpo follows progress; raw reward weighting follows the easy task
    assert fgrpo_rows[0].weight > fgrpo_rows[1].weight
    assert reward_rows[0].weight < reward_rows[1].weight


# --- server state --------------------------------------------------------------------------------


def test_state_update_by_hand_stderr_path() -> None:
    # Prepare: default beta 0.7, stderr scale; "z" is absent this round
    absent = ClientHistory(baseline=0.8, scale=0.05, rounds_seen=4)
    state = ServerState(
        round=3, clients={"a": ClientHistory(baseline=0.2, scale=0.1, rounds_seen=1), "z": absent}
    )
    stats = [
        make_stats("a", r_pre=0.3, r_post=0.5, sigma_diff=0.4, m=16),  # observed stderr 0.1
        make_stats("new", r_pre=0.1, r_post=0.2, sigma_diff=0.8, m=4),  # observed stderr 0.4
    ]
    before = state.model_dump()
    # Execute
    rows, new_state = compute_weights(stats, state, AggregationSettings())
    # Assert
    assert state.model_dump() == before  # the input is not mutated
    assert new_state.round == 3
    assert new_state.clients["z"] == absent
    a, new = new_state.clients["a"], new_state.clients["new"]
    assert a.baseline == pytest.approx(0.7 * 0.2 + 0.3 * 0.5)
    assert a.scale == pytest.approx(0.7 * 0.1 + 0.3 * 0.1)
    assert a.rounds_seen == 2
    assert new.baseline == pytest.approx(0.7 * 0.1 + 0.3 * 0.2)
    assert new.scale == pytest.approx(0.4)
    assert new.rounds_seen == 1
    # gains use the history before the update: (0.5-0.3)/0.1 = 2 -> 1; (0.2-0.1)/0.4 = 0.25 -> 0
    assert [r.gain for r in rows] == pytest.approx([1.0, 0.0])
    assert [r.baseline for r in rows] == pytest.approx([0.2, 0.1])
    assert [r.scale for r in rows] == pytest.approx([0.1, 0.4])


def test_history_reference_with_std_scale_by_hand() -> None:
    # Prepare
    cfg = AggregationSettings(
        gain_reference="history", gain_scale="std", baseline_beta=0.5, gain_deadzone=0.0
    )
    round_1 = [make_stats("a", r_pre=0.2, r_post=0.4, sigma=0.3), make_stats("b")]
    round_2 = [make_stats("a", r_pre=0.4, r_post=0.5, sigma=0.1), make_stats("b")]
    # Execute
    rows_1, state = compute_weights(round_1, ServerState(), cfg)
    rows_2, state = compute_weights(round_2, state, cfg)
    # Assert: round 1 b=r_pre=0.2, s=0.3; then b=0.3, s=0.3; round 2 gain (0.5-0.3)/0.3
    assert rows_1[0].gain == pytest.approx(0.2 / 0.3)
    assert (rows_2[0].baseline, rows_2[0].scale) == pytest.approx((0.3, 0.3))
    assert rows_2[0].gain == pytest.approx(0.2 / 0.3)
    assert (state.clients["a"].baseline, state.clients["a"].scale) == pytest.approx((0.4, 0.2))


def test_scale_floor_guards_a_constant_reward() -> None:
    # Prepare: no spread at all on a [0, 10] reward
    stats = [make_stats("a", sigma=0.0, sigma_diff=0.0, r_post=0.45, reward_hi=10.0), make_stats("b")]
    # Execute
    rows, _ = compute_weights(stats, ServerState(), AggregationSettings(gain_deadzone=0.0))
    # Assert: floor = 1e-3 * 10
    assert rows[0].scale == pytest.approx(0.01)
    assert rows[0].gain == pytest.approx(0.05 / 0.01)


@pytest.mark.parametrize(
    ("stats", "message"),
    [
        ([], "no client stats"),
        ([make_stats("a"), make_stats("a")], "duplicate client ids"),
        ([make_stats("a"), make_stats("b", r_post=float("nan"))], "client 'b' reported non-finite"),
    ],
)
def test_empty_duplicate_or_non_finite_stats_raise(stats: list[ClientStats], message: str) -> None:
    # Execute / Assert
    with pytest.raises(AggregationError, match=message):
        compute_weights(stats, ServerState(), AggregationSettings())


def test_informative_data_size_and_excluded_negative_gains_by_hand() -> None:
    # Prepare: gains after the dead zone 1.0, 0.0, -1.0 (scale 0.1, deadzone 1); "c" trained on nothing
    stats = [
        make_stats("a", r_pre=0.3, r_post=0.5, sigma_diff=0.4, m=16, n_k=40, all_equal_group_frac=0.5),
        make_stats("b", r_pre=0.3, r_post=0.3, sigma_diff=0.4, m=16, n_k=20),
        make_stats("c", r_pre=0.3, r_post=0.1, sigma_diff=0.4, m=16, n_k=20, all_equal_group_frac=1.0),
    ]
    informative = AggregationSettings(gain_n="informative", mu=0.1, weight_cap=1.0)
    exclude = AggregationSettings(negative_gain="exclude", mu=0.1, weight_cap=1.0)
    # Execute
    rows_i, _ = compute_weights(stats, ServerState(), informative)
    rows_e, _ = compute_weights(stats, ServerState(), exclude)
    # Assert: n_eff = 20, 20, 0; u = 20e, 20, 0
    u = np.array([20 * np.e, 20.0, 0.0])
    np.testing.assert_allclose([r.weight for r in rows_i], 0.9 * u / u.sum() + 0.1 / 3, rtol=1e-12)
    # exclude: c (gain -1) gets 0; a, b share (1 - mu) by u = 40e, 20 and mu/2 each
    u = np.array([40 * np.e, 20.0])
    np.testing.assert_allclose([r.weight for r in rows_e], [*(0.9 * u / u.sum() + 0.05), 0.0], rtol=1e-12)


def test_variants_fall_back_when_nothing_is_left() -> None:
    # Prepare: every gain negative; every group all-equal
    stats = [make_stats(c, r_pre=0.5, r_post=0.1, all_equal_group_frac=1.0) for c in ("a", "b")]
    cfg = AggregationSettings(gain_n="informative", negative_gain="exclude")
    # Execute
    rows, _ = compute_weights(stats, ServerState(), cfg)
    # Assert: equal shares, not a division by zero
    assert [r.weight for r in rows] == pytest.approx([0.5, 0.5])
