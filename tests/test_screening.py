"""Norm bounds no owner of the round can move (fgrpo_core/screening.py), against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fgrpo_core.config import AggregationSettings
from fgrpo_core.deltas import delta_norm
from fgrpo_core.screening import (
    NormBound,
    fixed_bounds,
    initial_reference,
    next_norm_history,
    screen_norms,
    tightest,
)
from fgrpo_core.types import Adapter


def _delta(norm: float, seed: int) -> Adapter:
    values = torch.from_numpy(np.random.default_rng(seed).standard_normal(64)).float()
    return {"lora_A": values * (norm / float(values.double().norm()))}


def test_fixed_bounds_take_the_median_of_the_remembered_rounds_and_the_global_norm() -> None:
    # Prepare: 10 rounds remembered, 8 kept; a zero and a nan entry are not scales.
    settings = AggregationSettings(norm_history_rounds=8)
    history = [9.0, 9.0, 1.0, 2.0, 0.0, 3.0, float("nan"), 4.0, 5.0, 6.0]
    # Execute
    bounds = fixed_bounds(history, 7.5, settings)
    # Assert
    last = [h for h in history[-8:] if h > 0 and np.isfinite(h)]
    assert [(b.what, b.reference, b.ratio) for b in bounds] == [
        ("median of earlier rounds", float(np.median(last)), settings.max_delta_history_ratio),
        ("initial global adapter norm", 7.5, settings.max_delta_global_ratio),
    ]


def test_the_global_reference_is_theta_0s_norm_once_recorded() -> None:
    # Execute / Assert: round 1 records the current global (theta_0); later rounds keep it, however
    # far an accepted delta grew the global; an all-zero theta_0 gives no scale.
    assert initial_reference(None, lambda: 6.1) == 6.1
    assert initial_reference(6.1, lambda: 8.3) == 6.1
    assert initial_reference(0.0, lambda: 8.3) == 8.3


def test_no_history_and_a_zero_global_give_no_bound() -> None:
    # Execute / Assert
    assert fixed_bounds([], 0.0, AggregationSettings()) == []
    assert (
        fixed_bounds([1.0], 1.0, AggregationSettings(norm_history_rounds=0))[0].what
        == "initial global adapter norm"
    )
    assert tightest([]) is None


def test_next_norm_history_appends_the_median_and_keeps_the_last_rounds() -> None:
    # Execute / Assert
    assert next_norm_history([1.0, 2.0], [3.0, 5.0, 100.0], 3) == [1.0, 2.0, 5.0]
    assert next_norm_history([1.0, 2.0, 3.0], [4.0, 6.0], 3) == [2.0, 3.0, 5.0]
    assert next_norm_history([1.0], [], 3) == [1.0]
    assert next_norm_history([1.0], [2.0], 0) == []


@pytest.mark.parametrize("action", ["clip", "reject"])
def test_two_deltas_one_1e30_are_screened_by_a_fixed_bound(action: str) -> None:
    # Prepare: the round's median is the pair's mean, so it alone passes both.
    deltas = {"a": _delta(1.0, 0), "b": _delta(1e30, 1)}
    bound = NormBound("global adapter norm", 4.0, 1.0, "aggregation.max_delta_global_ratio")
    # Execute
    unscreened = screen_norms(deltas, 5.0, action)  # type: ignore[arg-type]
    screen = screen_norms(deltas, 5.0, action, [bound])  # type: ignore[arg-type]
    # Assert
    assert unscreened.clipped == [] and unscreened.rejected == {}
    if action == "reject":
        assert sorted(screen.kept) == ["a"]
        assert screen.rejected["b"].startswith("norm 1e+30 > 1.0 x global adapter norm 4 (")
    else:
        assert screen.clipped == ["b"] and delta_norm(screen.kept["b"]) == pytest.approx(4.0)
        assert screen.clip_reasons["b"] == "norm clipped: 1e+30 -> 1 x global adapter norm 4"
    assert torch.equal(screen.kept["a"]["lora_A"], deltas["a"]["lora_A"])


def test_a_zero_median_no_longer_disables_screening() -> None:
    # Prepare: two exact zeros and one huge delta.
    zero = {"lora_A": torch.zeros(64)}
    deltas = {"a": zero, "b": _delta(1e6, 2), "c": zero}
    bound = NormBound("median of earlier rounds", 0.5, 10.0, "aggregation.max_delta_history_ratio")
    # Execute
    screen = screen_norms(deltas, 5.0, "reject", [bound])
    # Assert
    assert screen.median == 0.0 and sorted(screen.kept) == ["a", "c"]
    assert "10.0 x median of earlier rounds 0.5" in screen.rejected["b"]


def test_the_tightest_bound_decides() -> None:
    # Prepare
    deltas = {c: _delta(n, i) for i, (c, n) in enumerate({"a": 1.0, "b": 1.2, "c": 4.0}.items())}
    loose = NormBound("global adapter norm", 100.0, 1.0, "aggregation.max_delta_global_ratio")
    tight = NormBound("median of earlier rounds", 0.3, 10.0, "aggregation.max_delta_history_ratio")
    # Execute
    screen = screen_norms(deltas, 5.0, "clip", [loose, tight])
    # Assert: limits 6.0 (round median 1.2 x 5), 100, 3.0: only c is above 3.0.
    assert screen.clipped == ["c"] and delta_norm(screen.kept["c"]) == pytest.approx(3.0)
