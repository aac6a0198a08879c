"""Coordinate-wise median and trimmed mean (fgrpo_core/robust.py) against numpy, and their hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fgrpo_core.aggregation import aggregate_deltas, compute_weights
from fgrpo_core.config import AggregationSettings
from fgrpo_core.errors import AggregationError
from fgrpo_core.robust import apply_round, coordinate_median, trimmed_count, trimmed_mean
from fgrpo_core.types import Adapter, ServerState
from tests.aggregation_helpers import FAST, Q_A, make_adapter, make_stats


def _numpy_trimmed_mean(values: np.ndarray, fraction: float) -> np.ndarray:
    """scipy.stats.trim_mean's definition in plain numpy: sort on axis 0, cut floor(f*K) each end."""
    k = values.shape[0]
    cut = int(np.floor(fraction * k + 1e-9))
    return np.sort(values, axis=0)[cut : k - cut].mean(axis=0)


def _deltas(k: int, seed: int) -> dict[str, Adapter]:
    return {f"c{i}": make_adapter(seed + i) for i in range(k)}


def _stack(deltas: dict[str, Adapter], key: str) -> np.ndarray:
    return np.stack([deltas[cid][key].double().numpy() for cid in sorted(deltas)])


@FAST
@given(k=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_median_matches_numpy_median(k: int, seed: int) -> None:
    # Prepare
    reference, deltas = make_adapter(99), _deltas(k, seed)
    # Execute
    median = coordinate_median(reference, deltas)
    # Assert: numpy's median (the mean of the two middle values when K is even)
    for key in reference:
        np.testing.assert_allclose(median[key].numpy(), np.median(_stack(deltas, key), axis=0), atol=1e-6)
        assert median[key].dtype == torch.float32


@FAST
@given(k=st.integers(1, 9), seed=st.integers(0, 10_000), fraction=st.floats(0.0, 0.49))
def test_trimmed_mean_matches_numpy(k: int, seed: int, fraction: float) -> None:
    # Prepare
    reference, deltas = make_adapter(99), _deltas(k, seed)
    # Execute
    trimmed = trimmed_mean(reference, deltas, fraction)
    # Assert
    for key in reference:
        expected = _numpy_trimmed_mean(_stack(deltas, key), fraction)
        np.testing.assert_allclose(trimmed[key].numpy(), expected, atol=1e-6)


def test_trimmed_count_by_hand_and_out_of_range() -> None:
    # Execute / Assert: 0.2 x 5 is exactly 1 (not 0.999...); 0.2 x 4 rounds down to 0
    assert [trimmed_count(k, 0.2) for k in (1, 4, 5, 9, 10)] == [0, 0, 1, 1, 2]
    with pytest.raises(AggregationError, match="trim_fraction"):
        trimmed_count(4, 0.5)


def test_one_huge_outlier_moves_neither_rule_beyond_the_honest_values() -> None:
    # Prepare: 4 honest deltas and one x1e30 (issue 11's poison), 5 clients, trim 0.2 = 1 each end
    reference = make_adapter(0)
    deltas = _deltas(4, 10)
    deltas["rogue"] = {key: t * 1e30 for key, t in make_adapter(50).items()}
    honest = _stack({c: deltas[c] for c in deltas if c != "rogue"}, Q_A)
    # Execute
    median = coordinate_median(reference, deltas)[Q_A].numpy()
    trimmed = trimmed_mean(reference, deltas, 0.2)[Q_A].numpy()
    # Assert: every coordinate stays inside the honest clients' range
    for combined in (median, trimmed):
        assert np.isfinite(combined).all()
        assert (combined >= honest.min(axis=0) - 1e-6).all()
        assert (combined <= honest.max(axis=0) + 1e-6).all()


@pytest.mark.parametrize("corrupt", ["drop", "reshape"])
def test_layout_mismatch_is_refused_naming_the_client(corrupt: str) -> None:
    # Prepare
    reference, deltas = make_adapter(0), _deltas(3, 1)
    if corrupt == "drop":
        del deltas["c1"][Q_A]
    else:
        deltas["c1"][Q_A] = deltas["c1"][Q_A].reshape(-1)
    # Execute / Assert
    for rule in (lambda: coordinate_median(reference, deltas), lambda: trimmed_mean(reference, deltas, 0.2)):
        with pytest.raises(AggregationError, match="c1"):
            rule()
    with pytest.raises(AggregationError, match="no deltas"):
        coordinate_median(reference, {})


@pytest.mark.parametrize("strategy", ["median", "trimmed_mean", "fedavg"])
def test_apply_round_picks_the_rule_and_applies_the_server_lr(strategy: str) -> None:
    # Prepare
    cfg = AggregationSettings(strategy=strategy, server_lr=0.5, trim_fraction=0.25)  # type: ignore[arg-type]
    global_adapter, deltas = make_adapter(0), _deltas(4, 20)
    stats = [make_stats(cid, n_k=10 * (i + 1)) for i, cid in enumerate(sorted(deltas))]
    rows, _ = compute_weights(stats, ServerState(), cfg)
    weights = {r.client_id: r.weight for r in rows}
    # Execute
    new = apply_round(global_adapter, deltas, weights, cfg)
    # Assert: the robust rules weight no client (rows show 1/K); fedavg is the weighted sum
    for key in global_adapter:
        values = _stack(deltas, key)
        if strategy == "median":
            step = np.median(values, axis=0)
        elif strategy == "trimmed_mean":
            step = _numpy_trimmed_mean(values, 0.25)
        else:
            step = np.tensordot(np.array([weights[c] for c in sorted(deltas)]), values, axes=1)
        expected = global_adapter[key].double().numpy() + 0.5 * step
        np.testing.assert_allclose(new[key].numpy(), expected, atol=1e-5)
    if strategy != "fedavg":
        assert [r.weight for r in rows] == pytest.approx([0.25] * 4)
    else:
        fedavg = aggregate_deltas(global_adapter, deltas, weights, 0.5, "separate")
        assert all(torch.equal(new[k], fedavg[k]) for k in global_adapter)


@pytest.mark.parametrize("fraction", [-0.1, 0.5, float("nan")])
def test_trim_fraction_is_validated(fraction: float) -> None:
    # Execute / Assert
    with pytest.raises(ValidationError, match="trim_fraction"):
        AggregationSettings(strategy="trimmed_mean", trim_fraction=fraction)
