"""The streamed aggregation (fgrpo_core/streaming.py) against the per-tensor one, and its memory in K."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fgrpo_core.aggregation import aggregate_deltas
from fgrpo_core.config import AggregationSettings
from fgrpo_core.errors import AggregationError
from fgrpo_core.flat import as_flat, flat_copy, layout_of
from fgrpo_core.robust import robust_step
from fgrpo_core.streaming import coordinate_wise, streamed_step, weighted_sum
from fgrpo_core.types import Adapter
from tests.aggregation_helpers import FAST, Q_A, make_adapter


def _deltas(k: int, seed: int) -> dict[str, Adapter]:
    return {f"c{i:02d}": make_adapter(seed + i) for i in range(k)}


def _weights(k: int, seed: int) -> dict[str, float]:
    raw = np.random.default_rng(seed).uniform(0.1, 1.0, size=k)
    return {f"c{i:02d}": float(w) for i, w in enumerate(raw / raw.sum())}


@FAST
@given(k=st.integers(1, 9), seed=st.integers(0, 10_000), lr=st.floats(0.1, 2.0))
def test_weighted_sum_equals_the_per_tensor_aggregation(k: int, seed: int, lr: float) -> None:
    # Prepare
    theta, deltas, weights = make_adapter(99), _deltas(k, seed), _weights(k, seed)
    # Execute
    streamed = weighted_sum(theta, deltas.__getitem__, weights, dict.fromkeys(deltas, 1.0), lr)
    reference = aggregate_deltas(theta, deltas, weights, lr, "separate")
    # Assert: the same float32 operations in the same order, element by element
    assert sorted(streamed) == sorted(reference)
    for key in reference:
        assert torch.equal(streamed[key], reference[key]), key


def test_a_clipped_owner_is_scaled_as_screening_scales_it() -> None:
    # Prepare: owner c01 clipped to a tenth, as screen_norms does it for the per-tensor path
    theta, deltas, weights = make_adapter(0), _deltas(3, 5), _weights(3, 5)
    factors = {"c00": 1.0, "c01": 0.1, "c02": 1.0}
    clipped = {c: {k: t * factors[c] for k, t in d.items()} for c, d in deltas.items()}
    # Execute
    streamed = weighted_sum(theta, deltas.__getitem__, weights, factors, 0.7)
    reference = aggregate_deltas(theta, clipped, weights, 0.7, "separate")
    # Assert
    for key in reference:
        assert torch.equal(streamed[key], reference[key]), key


@pytest.mark.parametrize("strategy", ["median", "trimmed_mean"])
@pytest.mark.parametrize("buffer_bytes", [1 << 30, 4 * 7 * 5])  # one pass; blocks of 5 coordinates
def test_robust_rules_unchanged_by_streaming(strategy: str, buffer_bytes: int) -> None:
    # Prepare
    settings = AggregationSettings(strategy=strategy, server_lr=0.5, trim_fraction=0.2)  # type: ignore[arg-type]
    theta, deltas = make_adapter(1), _deltas(7, 40)
    factors = {c: (0.25 if c == "c03" else 1.0) for c in deltas}
    clipped = {c: {k: t * factors[c] for k, t in d.items()} for c, d in deltas.items()}
    # Execute
    streamed = coordinate_wise(theta, deltas.__getitem__, factors, settings, buffer_bytes)
    reference = robust_step(theta, clipped, settings)
    # Assert: the same values per coordinate; only the float32 summation order of a mean over
    # K' kept values may differ with the block's width (K' roundings of |values| at most)
    for key in reference:
        if strategy == "median" or buffer_bytes > 1 << 20:
            assert torch.equal(streamed[key], reference[key]), key
        else:
            scale = max(float(t[key].abs().max()) for t in clipped.values())
            assert float((streamed[key] - reference[key]).abs().max()) <= 7 * 2.0**-24 * scale


def test_layout_and_freeze_a_are_checked_per_delta() -> None:
    # Prepare
    theta, deltas = make_adapter(0), _deltas(2, 3)
    weights, ones = {"c00": 0.5, "c01": 0.5}, {"c00": 1.0, "c01": 1.0}
    bad = {**deltas, "c01": {k: v for k, v in deltas["c01"].items() if k != Q_A}}
    # Execute / Assert
    with pytest.raises(AggregationError, match="c01"):
        weighted_sum(theta, bad.__getitem__, weights, ones, 1.0)
    with pytest.raises(AggregationError, match="freeze_a"):
        weighted_sum(theta, deltas.__getitem__, weights, ones, 1.0, "freeze_a")
    with pytest.raises(AggregationError, match="sum to"):
        weighted_sum(theta, deltas.__getitem__, {"c00": 0.5, "c01": 0.6}, ones, 1.0)


def test_a_decoded_adapter_is_read_in_place() -> None:
    # Prepare
    adapter = flat_copy(make_adapter(2))
    layout = layout_of(adapter)
    # Execute
    flat = as_flat(adapter, layout)
    # Assert: the buffer the tensors view, not a copy
    assert flat.data_ptr() == adapter[layout.keys[0]].data_ptr()
    assert flat.numel() == sum(t.numel() for t in adapter.values())


class _Store:
    """Deltas made when loaded (as read from a store) and counted while alive."""

    def __init__(self, theta: Adapter, k: int) -> None:
        self.theta, self.ids = theta, [f"c{i:02d}" for i in range(k)]
        self.live = self.peak = self.loads = 0

    def _dropped(self) -> None:
        self.live -= 1

    def load(self, cid: str) -> Adapter:
        scale = 0.01 * (1 + self.ids.index(cid))
        delta = flat_copy({key: torch.full_like(t, scale) for key, t in self.theta.items()})
        self.loads, self.live = self.loads + 1, self.live + 1
        self.peak = max(self.peak, self.live)
        weakref.finalize(next(iter(delta.values())), self._dropped)
        return delta


@pytest.mark.parametrize("strategy", ["fedavg", "median"])
def test_deltas_held_at_once_do_not_grow_with_k(strategy: str) -> None:
    # Prepare
    settings = AggregationSettings(strategy=strategy)  # type: ignore[arg-type]
    theta = make_adapter(0)
    stores = {k: _Store(theta, k) for k in (2, 16)}
    # Execute
    for k, store in stores.items():
        weights = dict.fromkeys(store.ids, 1.0 / k)
        streamed_step(theta, store.load, weights, dict.fromkeys(store.ids, 1.0), settings)
    # Assert: one delta alive at a time, each loaded once (one pass: the robust buffer holds K x P)
    for k, store in stores.items():
        assert (store.peak, store.loads, store.live) == (1, k, 0), k
