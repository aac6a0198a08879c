"""SPEC §2 invariants of the weights (hypothesis): order, identical deltas, affine scale, dead zone, cap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fgrpo_core.aggregation import aggregate_deltas, compute_weights
from fgrpo_core.config import AggregationSettings
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
    cfg = AggregationSettings(lam=lam, mu=mu, gain_deadzone=1.0, weight_cap=1.0)
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
    cap=st.floats(0.01, 1.0),
    mu=st.floats(0.0, 1.0),
)
def test_weights_sum_to_one_respect_the_cap_and_the_floor(
    stats: list[ClientStats], strategy: str, cap: float, mu: float
) -> None:
    # Prepare: any cap, below 1/K too (a client's cap is max(cap, its FedAvg share))
    k = len(stats)
    n = np.array([s.n_k for s in stats], dtype=float)
    cfg = AggregationSettings(strategy=strategy, weight_cap=cap, mu=mu)  # type: ignore[arg-type]
    # Execute
    rows, _ = compute_weights(stats, ServerState(), cfg)
    weights = np.array([r.weight for r in rows])
    # Assert
    assert abs(weights.sum() - 1.0) <= 1e-9
    floor = mu / k if strategy == "fgrpo" else 0.0  # no cap under fgrpo's floor (a cap < 1/K could be)
    assert (weights <= np.maximum(max(cap, floor), n / n.sum()) + 1e-9).all()
    if strategy == "fgrpo":
        assert (weights >= mu / k - 1e-12).all()
    if strategy == "fedavg":
        np.testing.assert_allclose(weights, n / n.sum(), rtol=1e-9)  # FedAvg is never capped


@FAST
@given(stats=rounds(), liar=st.integers(0, 7), claim=st.floats(-1e6, 1e6))
def test_one_liar_takes_at_most_the_default_cap_or_its_share(
    stats: list[ClientStats], liar: int, claim: float
) -> None:
    # Prepare: one owner reports any r_post (SPEC §5: it must not take the round)
    k = liar % len(stats)
    lied = [s.model_copy(update={"r_post": claim}) if i == k else s for i, s in enumerate(stats)]
    n = np.array([s.n_k for s in stats], dtype=float)
    # Execute
    rows, _ = compute_weights(lied, ServerState(), AggregationSettings())
    # Assert: the library default binds at any K, without min_clients or a gate
    assert rows[k].weight <= max(0.5, n[k] / n.sum()) + 1e-9


def test_weight_cap_redistributes_proportionally_and_never_caps_fedavg() -> None:
    # Prepare: equal sizes; raw reward weights 0.7 / 0.2 / 0.1; fedavg 0.7 / 0.2 / 0.1 by size
    equal = [
        make_stats(c, n_k=10, r_post=r, reward_lo=0.0, reward_hi=10.0)
        for c, r in (("a", 7.0), ("b", 2.0), ("c", 1.0))
    ]
    sized = [make_stats("a", n_k=70), make_stats("b", n_k=20), make_stats("c", n_k=10)]
    # Execute
    rows, _ = compute_weights(equal, ServerState(), AggregationSettings(strategy="reward", weight_cap=0.5))
    tiny_cap, _ = compute_weights(
        equal, ServerState(), AggregationSettings(strategy="reward", weight_cap=0.01)
    )
    fedavg, _ = compute_weights(sized, ServerState(), AggregationSettings(strategy="fedavg", weight_cap=0.5))
    # Assert: the 0.2 excess splits 2:1; a cap below 1/K leaves each its share; FedAvg untouched
    np.testing.assert_allclose([r.weight for r in rows], [0.5, 0.2 + 0.2 * 2 / 3, 0.1 + 0.2 / 3], rtol=1e-12)
    np.testing.assert_allclose([r.weight for r in tiny_cap], [1 / 3] * 3, rtol=1e-12)
    np.testing.assert_allclose([r.weight for r in fedavg], [0.7, 0.2, 0.1], rtol=1e-12)
