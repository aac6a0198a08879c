"""FGRPO's scale start (aggregation.scale_start): a round in which no answer changed is no noise level.

The affine invariance of both starts is also a property test in test_aggregation_properties.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgrpo_core.aggregation import compute_weights
from fgrpo_core.config import AggregationSettings
from fgrpo_core.gains import client_gain, updated_history
from fgrpo_core.types import ClientStats, ServerState
from tests.aggregation_helpers import make_stats, rounds

FAST = settings(max_examples=60, deadline=None)
M = 16  # validation prompts of the client


def _rounds_of_one_client() -> list[ClientStats]:
    """Round 1: no greedy answer changes; round 2: one answer of 16 turns right; round 3: none."""
    one_changed = math.sqrt((1 / M) * (1 - 1 / M) * M / (M - 1))  # sample std of 15 zeros and a 1
    return [
        make_stats("a", r_pre=0.5, r_post=0.5, sigma_diff=0.0, m=M),
        make_stats("a", r_pre=0.5, r_post=0.5 + 1 / M, sigma_diff=one_changed, m=M),
        make_stats("a", r_pre=0.5625, r_post=0.5625, sigma_diff=0.0, m=M),
    ]


@pytest.mark.parametrize("scale_start", ["first_round", "first_informative"])
def test_one_changed_answer_after_a_silent_round_by_hand(scale_start: str) -> None:
    # Prepare
    cfg = AggregationSettings(gain_deadzone=0.0, scale_start=scale_start)  # type: ignore[arg-type]
    silent, one_right, silent_again = _rounds_of_one_client()
    stderr_2 = one_right.sigma_diff / math.sqrt(M)  # 0.0625
    # Execute
    h1 = updated_history(silent, None, cfg)
    gain_2 = client_gain(one_right, h1, cfg)
    h2 = updated_history(one_right, h1, cfg)
    h3 = updated_history(silent_again, h2, cfg)
    # Assert
    floor = 1e-3  # scale_floor_frac x the {0,1} range
    if scale_start == "first_round":
        # SPEC's EMA starts at the silent round's 0: one changed answer reads as 62.5 standard errors.
        assert gain_2.scale == pytest.approx(floor)
        assert gain_2.gain == pytest.approx((1 / M) / floor)
        assert h3.scale == pytest.approx(0.7 * (0.3 * stderr_2))
    else:
        # No noise level yet: the round's own stderr, i.e. a paired t-statistic of 1.
        assert gain_2.scale == pytest.approx(stderr_2)
        assert gain_2.gain == pytest.approx(1.0)
        # The EMA starts at round 2's observation; round 3's silence leaves it there.
        assert h2.scale == pytest.approx(stderr_2)
        assert h3.scale == pytest.approx(stderr_2)
    assert (h1.rounds_seen, h2.rounds_seen, h3.rounds_seen) == (1, 2, 3)


@FAST
@given(history=st.lists(rounds(), min_size=1, max_size=4))
def test_both_starts_agree_when_no_round_is_silent(history: list[list[ClientStats]]) -> None:
    # Prepare: a client keeps its reward range; every observed scale is above the floor
    # (sigma_diff/sqrt(m) > 1e-3 x range)
    ranges: dict[str, tuple[float, float]] = {}

    def informative(stats: ClientStats) -> ClientStats:
        lo, hi = ranges.setdefault(stats.client_id, (stats.reward_lo, stats.reward_hi))
        sigma_diff = max(stats.sigma_diff, 0.01 * (hi - lo))
        return stats.model_copy(update={"sigma_diff": sigma_diff, "reward_lo": lo, "reward_hi": hi})

    literal = AggregationSettings(scale_start="first_round")
    skipping = AggregationSettings(scale_start="first_informative")
    state_a, state_b = ServerState(), ServerState()
    for generated in history:
        stats = [informative(s) for s in generated]
        # Execute
        rows_a, state_a = compute_weights(stats, state_a, literal)
        rows_b, state_b = compute_weights(stats, state_b, skipping)
        # Assert
        assert [r.model_dump() for r in rows_a] == [r.model_dump() for r in rows_b]
    assert state_a == state_b


def test_the_default_start_is_first_informative() -> None:
    # Prepare
    cfg = AggregationSettings(gain_deadzone=0.0)
    silent, one_right, _ = _rounds_of_one_client()
    # Execute
    gain_2 = client_gain(one_right, updated_history(silent, None, cfg), cfg)
    # Assert: SPEC §2's default reads one changed answer as a paired t-statistic of 1, not 62.5
    assert cfg.scale_start == "first_informative"
    assert gain_2.gain == pytest.approx(1.0)


def _reference_scales(observed: list[float], floor: float, beta: float) -> list[float]:
    """A plain loop of SPEC §2's first_informative EMA: s_k after each round (None until informative)."""
    scales, current = [], None
    for obs in observed:
        if current is None:
            current = obs if obs > floor else None
        elif obs > floor:
            current = beta * current + (1 - beta) * obs
        scales.append(current)
    return scales


@FAST
@given(
    changed=st.lists(st.integers(0, M), min_size=1, max_size=6),
    beta=st.floats(0.0, 0.95),
)
def test_first_informative_scale_matches_a_plain_loop(changed: list[int], beta: float) -> None:
    # Prepare: round i changes `changed[i]` answers of M by +1 (0 changed: a silent round)
    cfg = AggregationSettings(baseline_beta=beta)
    rounds_ = []
    for c in changed:
        diffs = np.array([1.0] * c + [0.0] * (M - c))
        rounds_.append(make_stats("a", r_pre=0.0, r_post=c / M, sigma_diff=float(diffs.std()), m=M))
    observed = [s.sigma_diff / math.sqrt(M) for s in rounds_]
    expected = _reference_scales(observed, 1e-3, beta)
    # Execute
    history = None
    for i, stats in enumerate(rounds_):
        gain = client_gain(stats, history, cfg)
        # Assert: the gain divides by the measured scale, or by the round's own while none exists
        previous = expected[i - 1] if i > 0 else None
        used = previous if previous is not None else observed[i]
        assert gain.scale == pytest.approx(max(used, 1e-3), rel=1e-9)
        history = updated_history(stats, history, cfg)
        if expected[i] is not None:
            assert history.scale == pytest.approx(expected[i], rel=1e-9)


@FAST
@given(
    history=st.lists(rounds(), min_size=1, max_size=4),
    silent=st.lists(st.booleans(), min_size=4, max_size=4),
    a=st.floats(0.1, 100.0),
    c=st.floats(-10.0, 10.0),
)
def test_default_gain_is_affine_invariant_with_silent_rounds(
    history: list[list[ClientStats]], silent: list[bool], a: float, c: float
) -> None:
    # Prepare: client c0's rewards are a*r + c; some of its rounds are silent (no answer changed)
    cfg = AggregationSettings()
    state, moved_state = ServerState(), ServerState()
    for generated, quiet in zip(history, silent, strict=False):
        first = generated[0]
        if quiet:
            first = first.model_copy(update={"sigma_diff": 0.0, "r_post": first.r_pre})
        lo, hi = first.reward_lo, first.reward_hi
        moved_first = first.model_copy(
            update={
                "r_pre": a * first.r_pre + c,
                "r_post": a * first.r_post + c,
                "sigma": a * first.sigma,
                "sigma_diff": a * first.sigma_diff,
                "reward_lo": a * lo + c,
                "reward_hi": a * hi + c,
            }
        )
        # Execute
        rows, state = compute_weights([first, *generated[1:]], state, cfg)
        moved_rows, moved_state = compute_weights([moved_first, *generated[1:]], moved_state, cfg)
        # Assert
        assert moved_rows[0].gain == pytest.approx(rows[0].gain, rel=1e-7, abs=1e-7)
        assert moved_rows[0].weight == pytest.approx(rows[0].weight, rel=1e-7, abs=1e-9)
