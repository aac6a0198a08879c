"""Dishonest clients with well-formed deltas (SPEC §5): a weight within the documented bound, bounded harm."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fgrpo_core.aggregation import aggregate_deltas
from fgrpo_core.deltas import delta_norm
from tests.faults.shared import (
    CLIENTS,
    EVAL_TOLERANCE,
    Round1,
    assert_equals_the_honest_rest,
    fgrpo_weight,
    normalised_reward,
    replace_update,
    row_of,
    same_adapter,
    worst_case_weight,
)

pytestmark = [pytest.mark.slow]


# --- dishonest clients with well-formed deltas -------------------------------------------------


def test_sign_flipped_delta_keeps_an_ordinary_weight_and_bounded_influence(round1: Round1) -> None:
    # Prepare: owner-b uploads -delta with its honest report (same norm: screening cannot see it).
    flipped = {k: -v for k, v in round1.honest["owner-b"].delta.items()}
    updates = replace_update(round1, "owner-b", delta=flipped)
    # Execute
    outcome = round1.aggregate(updates)
    # Assert: its weight is the honest one (the same report), and the global moves away from the
    # honest global by exactly w_b * 2 * |delta_b|, no more.
    honest_weight = row_of(round1.outcome, "owner-b").weight
    assert row_of(outcome, "owner-b").accepted and row_of(outcome, "owner-b").weight == honest_weight
    assert honest_weight <= worst_case_weight(4, [4, 4], round1.cfg)
    shift = delta_norm({k: outcome.adapter[k] - round1.outcome.adapter[k] for k in outcome.adapter})
    expected = (
        round1.cfg.aggregation.server_lr * honest_weight * 2 * delta_norm(round1.honest["owner-b"].delta)
    )
    assert shift == pytest.approx(expected, rel=1e-4)
    harm = normalised_reward(round1.evaluation) - normalised_reward(round1.evaluate(outcome.adapter))
    assert harm <= EVAL_TOLERANCE


@pytest.mark.parametrize("action", ["clip", "reject"])
def test_scaled_delta_is_clipped_to_the_median_bound_or_rejected(round1: Round1, action: str) -> None:
    # Prepare: owner-b uploads 100 x its delta; a control round without screening shows the harm.
    scaled = {k: 100 * v for k, v in round1.honest["owner-b"].delta.items()}
    updates = replace_update(round1, "owner-b", delta=scaled)
    cfg = round1.config(aggregation={"norm_action": action})
    unscreened = round1.config(aggregation={"max_delta_norm_ratio": 1e9, "max_delta_global_ratio": 1e9})
    # Execute
    outcome = round1.aggregate(updates, cfg)
    control = round1.aggregate(updates, unscreened)
    # Assert
    row = row_of(outcome, "owner-b")
    ratio = cfg.aggregation.max_delta_norm_ratio
    norms = sorted(
        [delta_norm(round1.honest[c].delta) for c in ("owner-a", "owner-c")] + [delta_norm(scaled)]
    )
    median = norms[1]
    if action == "reject":
        assert row.reason.startswith(f"norm {delta_norm(scaled):.4g} > {ratio}")
        assert_equals_the_honest_rest(round1, outcome, "owner-b")
    else:
        # Reference: the same round with owner-b's delta scaled down to ratio x median by hand.
        clipped = {k: v * (ratio * median / delta_norm(scaled)) for k, v in scaled.items()}
        weights = {r.client_id: r.weight for r in outcome.rows}
        reference = aggregate_deltas(
            round1.theta0,
            {**{c: round1.honest[c].delta for c in CLIENTS}, "owner-b": clipped},
            weights,
            1.0,
            "separate",
        )
        assert row.accepted and row.clipped and row.reason.startswith("norm clipped: ")
        assert delta_norm(clipped) == pytest.approx(ratio * median)
        assert row.weight == pytest.approx(row_of(round1.outcome, "owner-b").weight)
        assert same_adapter(outcome.adapter, reference)
    harm = normalised_reward(round1.evaluation) - normalised_reward(round1.evaluate(outcome.adapter))
    control_harm = normalised_reward(round1.evaluation) - normalised_reward(round1.evaluate(control.adapter))
    assert harm <= EVAL_TOLERANCE < control_harm


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ({"weight_cap": 1.0}, "gain_clip"),
        ({}, "weight_cap"),
        ({"gain_source": "server_probe"}, "probe"),
    ],
    ids=["reported-cap-off", "reported-default-cap", "server-probe"],
)
def test_inflated_r_post_is_bounded_by_gain_clip_cap_or_probe(
    round1: Round1, aggregation: dict[str, Any], expected: str
) -> None:
    # Prepare: owner-b reports r_post x 10 (its delta is its honest one).
    cfg = round1.config(aggregation=aggregation)
    liar = round1.honest["owner-b"].stats
    updates = replace_update(round1, "owner-b", r_post=10 * liar.r_post)
    # Execute
    outcome = round1.aggregate(updates, cfg)
    # Assert
    row = row_of(outcome, "owner-b")
    others = [(row_of(outcome, c).gain, row_of(outcome, c).n_k) for c in ("owner-a", "owner-c")]
    assert row.reported_r_post == 10 * liar.r_post
    if expected == "probe":
        # The coordinator measured r_post itself: the lie changes nothing.
        honest = round1.aggregate(round1.honest, cfg)
        assert [r.model_dump(exclude={"reported_r_post"}) for r in outcome.rows] == [
            r.model_dump(exclude={"reported_r_post"}) for r in honest.rows
        ]
        assert same_adapter(outcome.adapter, honest.adapter)
    else:
        # The gain hits the clip; the weight is the reference formula at +gain_clip, under the bound.
        assert row.gain >= cfg.aggregation.gain_clip
        reference = fgrpo_weight(cfg.aggregation.gain_clip, row.n_k, others, cfg)
        cap = max(cfg.aggregation.weight_cap, row.n_k / sum([row.n_k, *(n for _, n in others)]))
        assert row.weight == pytest.approx(min(reference, cap), abs=1e-12)
        assert row.weight <= worst_case_weight(row.n_k, [n for _, n in others], cfg) + 1e-12
        if expected == "weight_cap":
            assert row.weight == pytest.approx(0.5)
    harm = normalised_reward(round1.evaluation) - normalised_reward(round1.evaluate(outcome.adapter))
    assert harm <= EVAL_TOLERANCE


@pytest.mark.parametrize("gain_source", ["reported", "server_probe"])
def test_free_rider_zero_delta_gains_nothing_and_only_dilutes(round1: Round1, gain_source: str) -> None:
    # Prepare: owner-c trains nothing and uploads zeros; it reports what it measured (r_post = r_pre).
    stats = round1.honest["owner-c"].stats
    zero = {k: torch.zeros_like(v) for k, v in round1.honest["owner-c"].delta.items()}
    updates = replace_update(round1, "owner-c", delta=zero, r_post=stats.r_pre, sigma_diff=0.0)
    cfg = round1.config(aggregation={"gain_source": gain_source})
    # Execute
    outcome = round1.aggregate(updates, cfg)
    # Assert: no gain (theta + 0 = theta: a probe measures r_post = r_pre exactly), so a weight of
    # at most the data-size share; the global is the others' step shrunk by (1 - w_c).
    row = row_of(outcome, "owner-c")
    assert row.gain == 0.0 and row.r_post == row.r_pre
    assert row.weight <= row.n_k / sum(row_of(outcome, c).n_k for c in CLIENTS) + 1e-12
    weights = {r.client_id: r.weight for r in outcome.rows}
    reference = aggregate_deltas(
        round1.theta0, {c: updates[c].delta for c in CLIENTS}, weights, 1.0, "separate"
    )
    assert same_adapter(outcome.adapter, reference)
    harm = normalised_reward(round1.evaluation) - normalised_reward(round1.evaluate(outcome.adapter))
    assert harm <= EVAL_TOLERANCE
