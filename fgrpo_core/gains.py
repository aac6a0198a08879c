"""FGRPO's personal statistics and gain (SPEC §2, "FGRPO weights"): pure functions of one client.

A client's gain is its progress this round measured against its own noise level: the
coordinator keeps, per client, an EMA baseline b_k of r_post and an EMA scale s_k (stderr of a
paired change, or the reward's std), and computes g_k = (r_post - ref) / max(s_k, floor) from
the values BEFORE this round updates them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fgrpo_core.config import AggregationSettings
from fgrpo_core.errors import AggregationError
from fgrpo_core.types import ClientHistory, ClientStats


def observed_scale(stats: ClientStats, settings: AggregationSettings) -> float:
    """This round's observation of the scale: stderr of the paired change, or the reward's std."""
    if settings.gain_scale == "stderr":
        return stats.sigma_diff / math.sqrt(stats.m)
    return stats.sigma


def scale_floor(stats: ClientStats, settings: AggregationSettings) -> float:
    """scale_floor = scale_floor_frac * (reward_hi - reward_lo): a constant reward cannot divide by 0."""
    reward_range = stats.reward_hi - stats.reward_lo
    if reward_range <= 0:
        raise AggregationError(
            f"client {stats.client_id!r}: reward_hi ({stats.reward_hi}) must exceed "
            f"reward_lo ({stats.reward_lo}); report the reward range of its task family"
        )
    return settings.scale_floor_frac * reward_range


@dataclass(frozen=True)
class Gain:
    """One client's gain and the statistics it was computed from (all logged)."""

    baseline: float  # b_k before this round's update
    scale: float  # s_k used for the gain, floored
    gain: float  # after the dead zone, before clipping


def _has_scale(history: ClientHistory, stats: ClientStats, settings: AggregationSettings) -> bool:
    """Whether the history's s_k is a measurement: always, or with 'first_informative' above the floor."""
    if settings.scale_start == "first_round":
        return True
    return history.scale > scale_floor(stats, settings)


def client_gain(stats: ClientStats, history: ClientHistory | None, settings: AggregationSettings) -> Gain:
    """g_k = (r_post - ref) / max(s_k, floor), with s_k and b_k from BEFORE this round's update.

    Without a measured s_k (first round, or no informative round yet) the round's own observed
    scale stands in, which makes the gain this round's paired t-statistic.
    """
    baseline = stats.r_pre if history is None else history.baseline
    if history is not None and _has_scale(history, stats, settings):
        previous_scale = history.scale
    else:
        previous_scale = observed_scale(stats, settings)
    scale = max(previous_scale, scale_floor(stats, settings))
    reference = stats.r_pre if settings.gain_reference == "round_start" else baseline
    raw_gain = (stats.r_post - reference) / scale
    # Dead zone: |gain| below gain_deadzone is noise, i.e. no progress.
    gain = math.copysign(max(0.0, abs(raw_gain) - settings.gain_deadzone), raw_gain)
    return Gain(baseline=baseline, scale=scale, gain=gain)


def updated_history(
    stats: ClientStats, history: ClientHistory | None, settings: AggregationSettings
) -> ClientHistory:
    """b_k <- beta b_k + (1-beta) r_post; s_k <- beta s_k + (1-beta) obs (first round: b=r_pre, s=obs).

    With scale_start 'first_informative' (the default), s_k starts at the first observation above
    the floor and later observations at or below it leave s_k unchanged; with 'first_round' it
    starts at the first observation whatever it is.
    """
    beta = settings.baseline_beta
    observation = observed_scale(stats, settings)
    baseline = stats.r_pre if history is None else history.baseline
    rounds_seen = 0 if history is None else history.rounds_seen
    if history is None or not _has_scale(history, stats, settings):
        scale = observation  # the EMA starts here (or restarts while nothing informative was seen)
    elif settings.scale_start == "first_informative" and observation <= scale_floor(stats, settings):
        scale = history.scale  # a degenerate round says nothing about the noise level
    else:
        scale = beta * history.scale + (1.0 - beta) * observation
    return ClientHistory(
        baseline=beta * baseline + (1.0 - beta) * stats.r_post,
        scale=scale,
        rounds_seen=rounds_seen + 1,
    )
