"""Aggregation: weights against independent numpy references, SPEC §2 invariants, LoRA products."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fgrpo_core.aggregation import (
    accumulation_error_factor,
    aggregate_deltas,
    compute_weights,
    screen_norms,
)
from fgrpo_core.config import AggregationSettings
from fgrpo_core.deltas import delta_norm
from fgrpo_core.errors import AggregationError
from fgrpo_core.types import Adapter, ClientHistory, ClientStats, ServerState

PREFIX = "base_model.model.model.layers.{layer}.self_attn.{module}.lora_{ab}.weight"
Q_A = PREFIX.format(layer=0, module="q_proj", ab="A")
Q_B = PREFIX.format(layer=0, module="q_proj", ab="B")
FAST = settings(max_examples=40, deadline=None)


def make_adapter(seed: int, rank: int = 4, hidden: int = 16, layers: int = 1) -> Adapter:
    generator = torch.Generator().manual_seed(seed)
    adapter: Adapter = {}
    for layer in range(layers):
        for module in ("q_proj", "v_proj"):
            adapter[PREFIX.format(layer=layer, module=module, ab="A")] = torch.randn(
                rank, hidden, generator=generator
            )
            adapter[PREFIX.format(layer=layer, module=module, ab="B")] = torch.randn(
                hidden, rank, generator=generator
            )
    return adapter


def make_stats(client_id: str, **overrides: Any) -> ClientStats:
    values: dict[str, Any] = {
        "client_id": client_id,
        "round": 0,
        "n_k": 32,
        "r_pre": 0.4,
        "r_post": 0.5,
        "sigma": 0.3,
        "sigma_diff": 0.2,
        "m": 16,
        "reward_lo": 0.0,
        "reward_hi": 1.0,
    }
    values.update(overrides)
    return ClientStats(**values)


def reference_fgrpo(
    stats: list[ClientStats], cfg: AggregationSettings, state: ServerState
) -> tuple[np.ndarray, np.ndarray]:
    """Straight numpy transcription of SPEC §2: (gains, weights)."""
    n = np.array([s.n_k for s in stats], dtype=float)
    r_pre = np.array([s.r_pre for s in stats])
    r_post = np.array([s.r_post for s in stats])
    if cfg.gain_scale == "stderr":
        observed = np.array([s.sigma_diff / np.sqrt(s.m) for s in stats])
    else:
        observed = np.array([s.sigma for s in stats])
    known = [s.client_id in state.clients for s in stats]
    b = np.array(
        [state.clients[s.client_id].baseline if k else s.r_pre for s, k in zip(stats, known, strict=True)]
    )
    floor = cfg.scale_floor_frac * np.array([s.reward_hi - s.reward_lo for s in stats])
    # first_informative: a history scale at or below the floor is no measurement yet
    measured = [
        k and (cfg.scale_start == "first_round" or state.clients[s.client_id].scale > f)
        for s, k, f in zip(stats, known, floor, strict=True)
    ]
    s_prev = np.array(
        [
            state.clients[s.client_id].scale if k else o
            for s, k, o in zip(stats, measured, observed, strict=True)
        ]
    )
    ref = r_pre if cfg.gain_reference == "round_start" else b
    g = (r_post - ref) / np.maximum(s_prev, floor)
    g = np.sign(g) * np.maximum(0.0, np.abs(g) - cfg.gain_deadzone)
    u = n**cfg.lam * np.exp(np.clip(g, -cfg.gain_clip, cfg.gain_clip) / cfg.tau)
    return g, (1 - cfg.mu) * u / u.sum() + cfg.mu / len(stats)


@st.composite
def client_stats(draw: st.DrawFn, client_id: str) -> ClientStats:
    lo = draw(st.floats(-2.0, 2.0))
    width = draw(st.floats(0.5, 10.0))
    return make_stats(
        client_id,
        n_k=draw(st.integers(1, 200)),
        r_pre=lo + width * draw(st.floats(0.0, 1.0)),
        r_post=lo + width * draw(st.floats(0.0, 1.0)),
        sigma=width * draw(st.floats(0.0, 0.5)),
        sigma_diff=width * draw(st.floats(0.0, 1.0)),
        m=draw(st.integers(1, 64)),
        reward_lo=lo,
        reward_hi=lo + width,
    )


@st.composite
def rounds(draw: st.DrawFn, min_clients: int = 2) -> list[ClientStats]:
    k = draw(st.integers(min_clients, 5))
    return [draw(client_stats(f"c{i}")) for i in range(k)]


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
    cfg = AggregationSettings(strategy="reward")
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
    cfg = AggregationSettings(strategy="fgrpo", **overrides)
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
    fgrpo_rows, _ = compute_weights([hard, easy], ServerState(), AggregationSettings(strategy="fgrpo"))
    reward_rows, _ = compute_weights([hard, easy], ServerState(), AggregationSettings(strategy="reward"))
    # Assert: fgrpo follows progress; raw reward weighting follows the easy task
    assert fgrpo_rows[0].weight > fgrpo_rows[1].weight
    assert reward_rows[0].weight < reward_rows[1].weight


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


# --- aggregate_deltas ----------------------------------------------------------------------------


def test_aggregate_matches_numpy_average() -> None:
    # Prepare
    global_adapter = make_adapter(0)
    deltas = {cid: make_adapter(i + 1) for i, cid in enumerate(["c2", "c0", "c1"])}
    weights = {"c0": 0.5, "c1": 0.3, "c2": 0.2}
    # Execute
    merged = aggregate_deltas(global_adapter, deltas, weights, 0.7, "separate")
    # Assert
    for key in global_adapter:
        stack = np.stack([deltas[c][key].double().numpy() for c in sorted(deltas)])
        average = np.average(stack, axis=0, weights=[weights[c] for c in sorted(deltas)])
        expected = global_adapter[key].double().numpy() + 0.7 * average
        # float32 accumulation: accumulation_error_factor(3) = 11 * 2**-24 ~ 7e-7 times |x| + ~1 here
        np.testing.assert_allclose(merged[key].numpy(), expected, rtol=1e-6, atol=1e-6)
        assert merged[key].dtype == torch.float32


def test_aggregate_of_32_clients_within_the_documented_float32_bound() -> None:
    # Prepare: magnitudes spread over 4 orders, uneven weights
    rng = np.random.default_rng(0)
    global_adapter = make_adapter(0, hidden=64)
    deltas = {
        f"c{i:02d}": {
            k: float(10.0 ** rng.uniform(-4, 0)) * v for k, v in make_adapter(i + 1, hidden=64).items()
        }
        for i in range(32)
    }
    raw = rng.uniform(0.1, 2.0, size=32)
    weights = {cid: float(w) for cid, w in zip(sorted(deltas), raw / raw.sum(), strict=True)}
    server_lr = 0.7
    # Execute
    merged = aggregate_deltas(global_adapter, deltas, weights, server_lr, "separate")
    # Assert: |merged - exact| <= factor(K) * (|theta| + eta * sum_k w_k |delta_k|), per element
    w = np.array([weights[c] for c in sorted(deltas)])
    for key in global_adapter:
        stack = np.stack([deltas[c][key].double().numpy() for c in sorted(deltas)])
        theta = global_adapter[key].double().numpy()
        exact = theta + server_lr * np.average(stack, axis=0, weights=w)
        bound = accumulation_error_factor(32) * (
            np.abs(theta) + server_lr * np.tensordot(w, np.abs(stack), 1)
        )
        assert bool((np.abs(merged[key].double().numpy() - exact) <= bound).all()), key


def test_aggregate_leaves_its_inputs_alone() -> None:
    # Prepare
    global_adapter = make_adapter(0)
    deltas = {"a": make_adapter(1), "b": make_adapter(2)}
    before = {
        c: {k: v.clone() for k, v in d.items()} for c, d in [("global", global_adapter), *deltas.items()]
    }
    # Execute
    merged = aggregate_deltas(global_adapter, deltas, {"a": 0.5, "b": 0.5}, 1.0, "separate")
    for tensor in merged.values():
        tensor.add_(1.0)  # a caller updating the result in place
    # Assert
    for c, d in [("global", global_adapter), *deltas.items()]:
        assert all(torch.equal(d[k], before[c][k]) for k in d), c


def _local(global_adapter: Adapter, delta: Adapter) -> Adapter:
    return {k: global_adapter[k] + delta[k] for k in global_adapter}


def _lora_products(adapter: Adapter) -> np.ndarray:
    return adapter[Q_B].double().numpy() @ adapter[Q_A].double().numpy()


def test_freeze_a_averages_the_products_exactly_and_separate_does_not() -> None:
    # Prepare
    global_adapter = make_adapter(0)
    weights = {"a": 0.6, "b": 0.4}
    frozen = {c: make_adapter(i + 1) for i, c in enumerate(weights)}
    for delta in frozen.values():
        for key in delta:
            if "lora_A" in key:
                delta[key] = torch.zeros_like(delta[key])
    moving = {c: make_adapter(i + 10) for i, c in enumerate(weights)}
    # Execute
    merged_frozen = aggregate_deltas(global_adapter, frozen, weights, 1.0, "freeze_a")
    merged_moving = aggregate_deltas(global_adapter, moving, weights, 1.0, "separate")
    # Assert
    frozen_average = sum(w * _lora_products(_local(global_adapter, frozen[c])) for c, w in weights.items())
    np.testing.assert_allclose(_lora_products(merged_frozen), frozen_average, rtol=1e-6, atol=1e-6)
    moving_average = sum(w * _lora_products(_local(global_adapter, moving[c])) for c, w in weights.items())
    assert np.abs(_lora_products(merged_moving) - moving_average).max() > 0.1


def test_freeze_a_refuses_a_changed_a_matrix() -> None:
    # Prepare
    global_adapter = make_adapter(0)
    deltas = {"a": {k: torch.zeros_like(v) for k, v in global_adapter.items()}, "b": make_adapter(1)}
    # Execute / Assert
    with pytest.raises(AggregationError, match=r"client 'b'.*lora_A"):
        aggregate_deltas(global_adapter, deltas, {"a": 0.5, "b": 0.5}, 1.0, "freeze_a")


def _drop_key(delta: Adapter) -> None:
    del delta[Q_B]


def _reshape_key(delta: Adapter) -> None:
    delta[Q_B] = torch.zeros(2, 4)


@pytest.mark.parametrize(("corrupt", "reason"), [(_drop_key, "lacks"), (_reshape_key, "shape")])
def test_layout_mismatch_names_client_and_key(corrupt: Any, reason: str) -> None:
    # Prepare
    global_adapter = make_adapter(0)
    deltas = {"good": make_adapter(1), "bad": make_adapter(2)}
    corrupt(deltas["bad"])
    # Execute / Assert
    with pytest.raises(AggregationError, match=reason) as info:
        aggregate_deltas(global_adapter, deltas, {"good": 0.5, "bad": 0.5}, 1.0, "separate")
    assert "'bad'" in str(info.value)
    assert Q_B in str(info.value)


def test_mismatched_client_sets_raise_naming_the_clients() -> None:
    # Prepare
    global_adapter = make_adapter(0)
    deltas = {"a": make_adapter(1), "b": make_adapter(2)}
    # Execute / Assert
    with pytest.raises(AggregationError, match=r"deltas only \['b'\].*weights only \['c'\]"):
        aggregate_deltas(global_adapter, deltas, {"a": 0.5, "c": 0.5}, 1.0, "separate")
    with pytest.raises(AggregationError, match="sum to"):
        aggregate_deltas(global_adapter, deltas, {"a": 0.5, "b": 0.2}, 1.0, "separate")


# --- screen_norms --------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["clip", "reject"])
def test_screen_norms_clips_or_rejects_a_100x_delta(action: str) -> None:
    # Prepare
    deltas = {f"c{i}": make_adapter(i) for i in range(5)}
    deltas["c4"] = {k: 100 * v for k, v in deltas["c4"].items()}
    norms = {c: delta_norm(d) for c, d in deltas.items()}
    median = float(np.median(list(norms.values())))
    # Execute
    screen = screen_norms(deltas, 5.0, action)  # type: ignore[arg-type]
    # Assert
    assert screen.median == pytest.approx(median)
    assert screen.norms == pytest.approx(norms)
    for c in ["c0", "c1", "c2", "c3"]:
        assert screen.kept[c] is deltas[c]
    if action == "clip":
        assert screen.clipped == ["c4"]
        assert delta_norm(screen.kept["c4"]) == pytest.approx(5.0 * median, rel=1e-6)
        assert screen.rejected == {}
    else:
        assert "c4" not in screen.kept
        assert "median" in screen.rejected["c4"]
        assert screen.clipped == []
