"""theta + eta * sum_k w_k delta_k against numpy, LoRA products under freeze_a, layout checks, norm screening."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fgrpo_core.aggregation import accumulation_error_factor, aggregate_deltas
from fgrpo_core.deltas import delta_norm
from fgrpo_core.errors import AggregationError
from fgrpo_core.screening import screen_norms
from fgrpo_core.types import Adapter
from tests.aggregation_helpers import Q_A, Q_B, make_adapter

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
