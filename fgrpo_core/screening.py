"""Norm bounds that one owner cannot move (SPEC §5): screening that works at any K.

The round's median norm (``screen_norms`` below) includes every delta of the round: with two
deltas it is their mean, and a zero median (honest owners whose groups were all-equal upload exact
zeros) screens nothing. So each delta is also bounded by references fixed before the round:

- ``history``: the median, over the last ``aggregation.norm_history_rounds`` committed rounds, of
  each round's median accepted, unclipped norm (a clipped norm is the bound itself, so it is left
  out; a round whose deltas were all clipped adds nothing). It lives in ``ServerState.norm_history``.
- ``global``: the norm of theta_0, the experiment's initial global adapter (a LoRA adapter's A
  matrices are never zero, so it gives a scale from round 1). Not theta_{t-1}'s: a clipped
  attacker's accepted delta grows the global, and with it a bound taken from the current global.

The tightest active bound decides; a bound whose reference is 0 is inactive. An owner who stays
just under the bound in every round still moves the history: the history is a median over rounds,
so the reference moves only once more than half of the remembered rounds are inflated, and then by
at most ``max_delta_history_ratio``; never a jump to 1e30.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fgrpo_core.deltas import delta_norm
from fgrpo_core.errors import AggregationError
from fgrpo_core.settings import AggregationSettings
from fgrpo_core.types import Adapter


@dataclass(frozen=True)
class NormBound:
    """A delta's norm may not exceed ``ratio x reference``; ``what`` and ``setting`` name it."""

    what: str
    reference: float
    ratio: float
    setting: str

    @property
    def limit(self) -> float:
        return self.ratio * self.reference

    def reject_reason(self, norm: float) -> str:
        return (
            f"norm {norm:.4g} > {self.ratio} x {self.what} {self.reference:.4g} ({self.setting}): "
            "the client's local steps diverged or its update was scaled"
        )

    def clip_reason(self, norm: float) -> str:
        return f"norm clipped: {norm:.4g} -> {self.ratio:g} x {self.what} {self.reference:.4g}"


def fixed_bounds(
    history: Sequence[float], global_norm: float, settings: AggregationSettings
) -> list[NormBound]:
    """The bounds known before the round starts (no delta of this round moves them).

    ``global_norm`` is theta_0's norm (``initial_reference``), fixed for the whole experiment."""
    bounds = []
    past = [h for h in history[-settings.norm_history_rounds :] if h > 0.0 and math.isfinite(h)]
    if past and settings.norm_history_rounds > 0:
        bounds.append(
            NormBound(
                "median of earlier rounds",
                float(np.median(past)),
                settings.max_delta_history_ratio,
                "aggregation.max_delta_history_ratio",
            )
        )
    if global_norm > 0.0 and math.isfinite(global_norm):
        bounds.append(
            NormBound(
                "initial global adapter norm",
                global_norm,
                settings.max_delta_global_ratio,
                "aggregation.max_delta_global_ratio",
            )
        )
    return bounds


def initial_reference(recorded: float | None, current_global_norm: Callable[[], float]) -> float:
    """theta_0's norm once recorded; before that (round 1) the current global's, which is theta_0.

    A recorded 0 (an all-zero theta_0) gives no scale: then the current global's norm serves. It
    is computed only then (a pass over the adapter that later rounds do not need)."""
    return recorded if recorded else current_global_norm()


def tightest(bounds: Iterable[NormBound]) -> NormBound | None:
    """The bound with the smallest limit (the first on ties), or None when there is none."""
    active = sorted(bounds, key=lambda b: b.limit)
    return active[0] if active else None


def next_norm_history(history: Sequence[float], accepted_norms: Iterable[float], keep: int) -> list[float]:
    """``history`` plus this round's median accepted norm, the last ``keep`` rounds only."""
    norms = list(accepted_norms)
    if keep <= 0:
        return []
    if not norms:
        return list(history)[-keep:]
    return [*history, float(np.median(norms))][-keep:]


# --- norm screening (SPEC §5) ----------------------------------------------------------------


@dataclass(frozen=True)
class NormScreen:
    """Outcome of screening a round's deltas by norm."""

    kept: dict[str, Adapter]  # clipped where needed; rejected ones are absent
    norms: dict[str, float]  # norm as received
    median: float
    clipped: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # client id -> reason
    clip_reasons: dict[str, str] = field(default_factory=dict)  # client id -> reason


@dataclass(frozen=True)
class NormDecision:
    """What screening decided from the norms alone: each kept owner's scale factor (1 or a clip)."""

    norms: dict[str, float]  # norm as received
    median: float
    factors: dict[str, float]  # kept owner -> factor its delta is multiplied by
    clipped: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # client id -> reason
    clip_reasons: dict[str, str] = field(default_factory=dict)  # client id -> reason


def decide_by_norms(
    norms: Mapping[str, float],
    max_ratio: float,
    action: Literal["clip", "reject"],
    bounds: Sequence[NormBound] = (),
) -> NormDecision:
    """Clip (to the limit) or reject every owner whose norm exceeds the tightest bound.

    The round's bound is max_ratio x the median over all of the round's norms, the outlier
    included: with 1 or 2 clients it cannot single one out (with two, the median is their mean),
    and a zero median (half the clients did not move) gives no scale. ``bounds`` are the ones an
    owner cannot move (``fixed_bounds``: earlier rounds, the global adapter); they work at any K.
    Norms only: the streamed round (fgrpo_core/streaming.py) needs no delta held to decide.
    """
    if not norms:
        raise AggregationError("no deltas to screen")
    client_ids = sorted(norms)
    median = float(np.median([norms[cid] for cid in client_ids]))
    round_bound = NormBound("median", median, max_ratio, "aggregation.max_delta_norm_ratio")
    bound = tightest([*([round_bound] if median > 0.0 else []), *bounds])
    factors: dict[str, float] = {}
    clipped: list[str] = []
    rejected: dict[str, str] = {}
    clip_reasons: dict[str, str] = {}
    for cid in client_ids:
        norm = norms[cid]
        if bound is None or norm <= bound.limit:
            factors[cid] = 1.0
        elif action == "reject":
            rejected[cid] = bound.reject_reason(norm)
        else:
            factors[cid] = bound.limit / norm
            clipped.append(cid)
            clip_reasons[cid] = bound.clip_reason(norm)
    return NormDecision(dict(norms), median, factors, clipped, rejected, clip_reasons)


def screen_norms(
    deltas: Mapping[str, Adapter],
    max_ratio: float,
    action: Literal["clip", "reject"],
    bounds: Sequence[NormBound] = (),
) -> NormScreen:
    """``decide_by_norms`` on held deltas, returning the kept ones (clipped where needed)."""
    if not deltas:
        raise AggregationError("no deltas to screen")
    decision = decide_by_norms({cid: delta_norm(d) for cid, d in deltas.items()}, max_ratio, action, bounds)
    kept = {
        cid: deltas[cid]
        if cid not in decision.clip_reasons
        else {k: t * factor for k, t in deltas[cid].items()}
        for cid, factor in decision.factors.items()
    }
    return NormScreen(
        kept,
        decision.norms,
        decision.median,
        decision.clipped,
        decision.rejected,
        decision.clip_reasons,
    )
