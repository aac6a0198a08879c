"""SPEC §2 invariants of the weights (hypothesis): order, identical deltas, affine scale, dead zone, cap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fgrpo_core.aggregation import aggregate_deltas, compute_weights
from fgrpo_core.config import AggregationSettings
from fgrpo_core.errors import AggregationError
from fgrpo_core.types import ClientStats, ServerState
from tests.aggregation_helpers import FAST, make_adapter, make_stats, rounds

# --- properties ----------------------------------------------------------------------------------


@FAST
@given(stats=rounds(), data=st.data(), strategy=st.sampled_from(["fedavg", "reward", "fgrpo"]))
def test_client_order_does_not_matter(stats: list[ClientStats], data: st.DataObject, strategy: str) -> None:
    # Prepare
    cfg = AggregationSettings(strategy=strategy)  # type: ignore[arg-type]
    shuffled = data.draw(st.permutations(stats))
    global_adapter = make_adapter(0)
    deltas = {s.client_id: make_adapter(i + 1) for i, s in enumerate(stats)}
    shuffled_deltas = {s.client_id: deltas[s.client_id] for s in shuffled}
    # Execute
    rows, _ = compute_weights(stats, ServerState(), cfg)
    shuffled_rows, _ = compute_weights(shuffled, ServerState(), cfg)
    weights = {r.client_id: r.weight for r in rows}
    shuffled_weights = {r.client_id: r.weight for r in shuffled_rows}
    merged = aggregate_deltas(global_adapter, deltas, weights, 1.0, "separate")
    shuffled_merged = aggregate_deltas(global_adapter, shuffled_deltas, shuffled_weights, 1.0, "separate")
    # Assert
    assert weights == pytest.approx(shuffled_weights, abs=1e-6)
    for key in global_adapter:
        torch.testing.assert_close(merged[key], shuffled_merged[key], rtol=0, atol=1e-6)


@FAST
@given(stats=rounds(), server_lr=st.floats(0.1, 2.0), seed=st.integers(0, 1000))
def test_identical_deltas_aggregate_to_themselves(
    stats: list[ClientStats], server_lr: float, seed: int
) -> None:
    # Prepare
    global_adapter, delta = make_adapter(seed), make_adapter(seed + 1)
    rows, _ = compute_weights(stats, ServerState(), AggregationSettings())
    weights = {r.client_id: r.weight for r in rows}
    # Execute
    merged = aggregate_deltas(global_adapter, dict.fromkeys(weights, delta), weights, server_lr, "separate")
    # Assert
    for key in global_adapter:
        torch.testing.assert_close(
            merged[key], global_adapter[key] + server_lr * delta[key], rtol=1e-6, atol=1e-6
        )


def _affine(stats: ClientStats, a: float, c: float) -> ClientStats:
    return stats.model_copy(
        update={
            "r_pre": a * stats.r_pre + c,
            "r_post": a * stats.r_post + c,
            "sigma": a * stats.sigma,
            "sigma_diff": a * stats.sigma_diff,
            "reward_lo": a * stats.reward_lo + c,
            "reward_hi": a * stats.reward_hi + c,
        }
    )


@FAST
@given(
    first=rounds(),
    second=rounds(),
    a=st.one_of(st.just(10.0), st.floats(0.1, 100.0)),
    c=st.one_of(st.just(3.0), st.floats(-10.0, 10.0)),
    reference=st.sampled_from(["round_start", "history"]),
    scale_start=st.sampled_from(["first_round", "first_informative"]),
    silent_first=st.booleans(),
)
def test_affine_change_of_one_clients_rewards_keeps_its_gain_and_weight(
    first: list[ClientStats],
    second: list[ClientStats],
    a: float,
    c: float,
    reference: str,
    scale_start: str,
    silent_first: bool,
) -> None:
    # Prepare: client c0 takes part in both rounds (the second uses its history), maybe silent
    # in the first (sigma_diff 0: no answer changed)
    scale = "stderr" if reference == "round_start" else "std"
    cfg = AggregationSettings(gain_reference=reference, gain_scale=scale, scale_start=scale_start)  # type: ignore[arg-type]
    if silent_first:
        first = [first[0].model_copy(update={"sigma_diff": 0.0, "sigma": 0.0}), *first[1:]]
    state, moved_state = ServerState(), ServerState()
    for stats in (first, second):
        moved = [_affine(stats[0], a, c), *stats[1:]]
        # Execute
        rows, state = compute_weights(stats, state, cfg)
        moved_rows, moved_state = compute_weights(moved, moved_state, cfg)
        # Assert
        assert moved_rows[0].gain == pytest.approx(rows[0].gain, rel=1e-7, abs=1e-7)
        assert moved_rows[0].weight == pytest.approx(rows[0].weight, rel=1e-7, abs=1e-9)


@FAST
@given(
    stats=rounds(),
    fractions=st.lists(st.floats(-0.99, 0.99), min_size=5, max_size=5),
    lam=st.floats(0.0, 2.0),
    mu=st.floats(0.0, 1.0),
)
def test_gains_inside_the_dead_zone_leave_data_size_weights(
    stats: list[ClientStats], fractions: list[float], lam: float, mu: float
) -> None:
    # Prepare: r_post - r_pre = f * deadzone * (the scale the gain will use), |f| < 1
    cfg = AggregationSettings(lam=lam, mu=mu, gain_deadzone=1.0)
    quiet = []
    for s, f in zip(stats, fractions, strict=False):
        used_scale = max(s.sigma_diff / np.sqrt(s.m), cfg.scale_floor_frac * (s.reward_hi - s.reward_lo))
        quiet.append(s.model_copy(update={"r_post": s.r_pre + f * cfg.gain_deadzone * used_scale}))
    n = np.array([s.n_k for s in quiet], dtype=float)
    # Execute
    rows, _ = compute_weights(quiet, ServerState(), cfg)
    # Assert
    assert all(r.gain == 0.0 for r in rows)
    expected = (1 - mu) * n**lam / (n**lam).sum() + mu / len(n)
    np.testing.assert_allclose([r.weight for r in rows], expected, rtol=1e-9, atol=1e-12)


@FAST
@given(
    stats=rounds(),
    strategy=st.sampled_from(["fedavg", "reward", "fgrpo"]),
    cap_fraction=st.floats(0.0, 1.0),
    mu=st.floats(0.0, 1.0),
)
def test_weights_sum_to_one_respect_the_cap_and_the_floor(
    stats: list[ClientStats], strategy: str, cap_fraction: float, mu: float
) -> None:
    # Prepare: any cap between 1/K and 1
    k = len(stats)
    cap = 1.0 / k + cap_fraction * (1.0 - 1.0 / k)
    cfg = AggregationSettings(strategy=strategy, weight_cap=cap, mu=mu)  # type: ignore[arg-type]
    # Execute
    rows, _ = compute_weights(stats, ServerState(), cfg)
    weights = np.array([r.weight for r in rows])
    # Assert
    assert abs(weights.sum() - 1.0) <= 1e-9
    assert (weights <= cap + 1e-12).all()
    if strategy == "fgrpo":
        assert (weights >= mu / k - 1e-12).all()


def test_weight_cap_redistributes_proportionally_and_refuses_an_impossible_cap() -> None:
    # Prepare: fedavg 0.7 / 0.2 / 0.1 capped at 0.5
    stats = [make_stats("a", n_k=70), make_stats("b", n_k=20), make_stats("c", n_k=10)]
    # Execute
    rows, _ = compute_weights(stats, ServerState(), AggregationSettings(strategy="fedavg", weight_cap=0.5))
    # Assert: the 0.2 excess splits 2:1
    np.testing.assert_allclose([r.weight for r in rows], [0.5, 0.2 + 0.2 * 2 / 3, 0.1 + 0.2 / 3], rtol=1e-12)
    with pytest.raises(AggregationError, match="weight_cap"):
        compute_weights(stats, ServerState(), AggregationSettings(weight_cap=0.3))
