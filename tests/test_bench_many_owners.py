"""bench/many_owners.py's arithmetic: the fit, the per-owner cost and the headline names."""

from __future__ import annotations

import pytest

from bench.many_owners import fit, markdown, summarise


def _run(k: int, steady: float) -> dict[str, object]:
    return {"k": k, "round_wall_s": [30.0, steady], "accepted": [k, k], "load_1min": [1.0, 1.0]}


def test_fit_recovers_a_fixed_and_a_per_owner_cost() -> None:
    # Prepare: wall = 5 + 1.5 K exactly
    points = [(k, 5.0 + 1.5 * k) for k in (2, 8, 32, 64)]
    # Execute
    fixed, per_owner = fit(points)
    # Assert
    assert fixed == pytest.approx(5.0) and per_owner == pytest.approx(1.5)


def test_headline_divides_by_k_and_never_credits_a_negative_fixed_cost() -> None:
    # Prepare: linear runs, then runs whose fit gives a fixed cost below 0
    linear = [_run(k, 5.0 + 1.5 * k) for k in (2, 8, 64)]
    convex = [_run(2, 3.0), _run(8, 8.0), _run(64, 112.0)]
    # Execute
    flat, grown = summarise(linear), summarise(convex)
    # Assert: a constant per-owner cost gives 1.0; below-0 fixed cost: the whole round over K
    assert flat["per_owner_64_over_8"] == pytest.approx(1.0)
    assert grown["fixed_cost_per_round_s"] < 0
    assert grown["per_owner_cost_by_k_s"] == {"2": 1.5, "8": 1.0, "64": 1.75}
    assert grown["per_owner_64_over_8"] == pytest.approx(1.75)
    page = markdown({"headline": grown, "runs": convex, "processes": 2, "rounds": 2, "machine": {"cpus": 2}})
    assert "outside the 20% goal" in page
