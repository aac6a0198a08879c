"""The coordinator's round (SPEC §1 coordinator steps 1-3, §5 validation), streamed over the deltas.

``aggregate_streamed`` never holds two deltas: ``load(cid)`` hands one over when it is needed.

1. Pass 1, per owner in sorted id order: load, ``check_update`` (stats, layout, finiteness),
   its norm; dropped. An owner whose delta cannot be loaded or fails a check is rejected.
2. Screening from the norms alone (fgrpo_core/screening.py ``decide_by_norms``): each kept
   owner's clip factor, or its rejection. (gain_source 'server_probe': a pass that loads each kept
   delta once more for the coordinator's probe.)
3. Weights from the stats (fgrpo_core/aggregation.py ``compute_weights``): small, held for all.
4. Pass 2: the new global, each delta loaded again and accumulated (fgrpo_core/streaming.py).

``aggregate_round`` is the same over deltas already in memory (the in-process runner, tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fgrpo_core import screening
from fgrpo_core.aggregation import compute_weights
from fgrpo_core.config import ExperimentConfig
from fgrpo_core.deltas import delta_norm
from fgrpo_core.errors import DeltaValidationError, QuorumError
from fgrpo_core.streaming import DeltaSource, streamed_step
from fgrpo_core.types import Adapter, ClientStats, RoundRow, ServerState
from fgrpo_core.update_checks import check_update


@dataclass
class ClientUpdate:
    """What a client produces in a round: its delta (stays a tensor map) and its scalar stats."""

    delta: Adapter
    stats: ClientStats


Probe = Callable[[str, ClientUpdate], ClientStats]


@dataclass
class RoundOutcome:
    """A committed round: the new global adapter, the round table and the new server state."""

    adapter: Adapter
    rows: list[RoundRow]
    state: ServerState
    accepted: list[str]
    failed: dict[str, str] = field(default_factory=dict)


def _clipped(delta: Adapter, factor: float) -> Adapter:
    return delta if factor == 1.0 else {k: t * factor for k, t in delta.items()}


def aggregate_round(
    global_adapter: Adapter,
    updates: Mapping[str, ClientUpdate],
    failed: Mapping[str, str],
    state: ServerState,
    cfg: ExperimentConfig,
    round_idx: int,
    delta_bytes: Mapping[str, int] | None = None,
    probe: Probe | None = None,
) -> RoundOutcome:
    """``aggregate_streamed`` over updates held in memory."""
    stats = {cid: u.stats for cid, u in updates.items()}
    return aggregate_streamed(
        global_adapter,
        stats,
        lambda cid: updates[cid].delta,
        failed,
        state,
        cfg,
        round_idx,
        delta_bytes,
        probe,
    )


def aggregate_streamed(
    global_adapter: Adapter,
    stats: Mapping[str, ClientStats],
    load: DeltaSource,
    failed: Mapping[str, str],
    state: ServerState,
    cfg: ExperimentConfig,
    round_idx: int,
    delta_bytes: Mapping[str, int] | None = None,
    probe: Probe | None = None,
) -> RoundOutcome:
    """Validate, screen, weight and apply a round's deltas; raise QuorumError below min_clients.

    ``stats`` holds each delivering owner's reported statistics (its manifest); ``load(cid)``
    returns its delta, raising DeltaValidationError when it cannot be read (that owner is
    rejected, its stats shown as unread). ``failed`` holds owners that never delivered (crash,
    timeout, bad manifest) with the reason; they are recorded, not averaged. ``probe``
    (gain_source 'server_probe') recomputes an owner's stats from its (clipped) delta.
    """
    agg = cfg.aggregation
    # The coordinator's own enrolment figures (SPEC §5): a manifest's n_k is only a claim.
    enrolled = {c.id: c.n_train for c in cfg.clients}
    rejected: dict[str, str] = dict(failed)
    unread: set[str] = set()
    norms: dict[str, float] = {}
    for cid in sorted(stats):
        if cid not in enrolled:
            rejected[cid] = f"manifest: {cid!r} is not an enrolled client of this experiment"
            continue
        try:
            delta = load(cid)
        except DeltaValidationError as err:
            rejected[cid] = f"{err.reason}: {err}"
            unread.add(cid)
            continue
        try:
            check_update(cid, stats[cid], delta, global_adapter, round_idx, enrolled[cid])
        except DeltaValidationError as err:
            rejected[cid] = f"{err.reason}: {err}"
            continue
        norms[cid] = delta_norm(delta)
        del delta  # before the next one is loaded

    # Hook (fgrpo_core/screening.py): bounds fixed before the round, so screening works at any K.
    initial_norm = screening.initial_reference(state.initial_global_norm, lambda: delta_norm(global_adapter))
    bounds = screening.fixed_bounds(state.norm_history, initial_norm, agg)
    screen = (
        screening.decide_by_norms(norms, agg.max_delta_norm_ratio, agg.norm_action, bounds) if norms else None
    )
    factors = dict(screen.factors) if screen else {}
    if screen:
        rejected.update(screen.rejected)
    if len(factors) < cfg.federation.min_clients:
        listed = "; ".join(f"{cid}: {rejected[cid]}" for cid in sorted(rejected)) or "none"
        raise QuorumError(
            f"round {round_idx} not committed: {len(factors)} valid delta(s) {sorted(factors)}, "
            f"federation.min_clients is {cfg.federation.min_clients}. Failed or rejected: {listed}. "
            "The previous global adapter stays; fix the listed clients (or lower "
            "federation.min_clients, or raise federation.round_timeout_s for late ones) and run again"
        )

    kept_stats = []
    for cid in sorted(factors):
        # Under server_probe nothing self-reported enters the weights: n_k is the enrolment figure.
        if probe is not None:
            update = ClientUpdate(delta=_clipped(load(cid), factors[cid]), stats=stats[cid])
            kept_stats.append(probe(cid, update).model_copy(update={"n_k": enrolled[cid]}))
        else:
            kept_stats.append(stats[cid])
    weight_rows, new_state = compute_weights(kept_stats, state, agg)
    weights = {r.client_id: r.weight for r in weight_rows}
    # Pass 2: the weighted sum, or the median / trimmed mean, one delta in memory at a time.
    new_adapter = streamed_step(global_adapter, load, weights, factors, agg)
    # A clipped norm is the bound, not a measurement: only unclipped deltas feed the history, so
    # an owner clipped every round never raises the bound it was clipped to.
    history = screening.next_norm_history(
        state.norm_history, (norms[c] for c in sorted(factors) if factors[c] == 1.0), agg.norm_history_rounds
    )
    new_state = new_state.model_copy(
        update={"round": round_idx, "norm_history": history, "initial_global_norm": initial_norm}
    )

    sizes = dict(delta_bytes or {})
    clipped = set(screen.clipped) if screen else set()
    rows = [
        RoundRow(
            **w.model_dump(),
            accepted=True,
            clipped=w.client_id in clipped,
            reason=screen.clip_reasons.get(w.client_id, "") if screen is not None else "",
            delta_norm=norms[w.client_id],
            delta_bytes=sizes.get(w.client_id, 0),
            reported_r_post=stats[w.client_id].r_post,
        )
        for w in weight_rows
    ]
    for cid in sorted(rejected):
        reported = stats[cid] if cid in stats and cid not in unread else None
        rows.append(
            RoundRow(
                client_id=cid,
                accepted=False,
                reason=rejected[cid],
                delta_norm=norms.get(cid, 0.0),
                delta_bytes=sizes.get(cid, 0),
                n_k=reported.n_k if reported else 0,
                r_pre=reported.r_pre if reported else 0.0,
                r_post=reported.r_post if reported else 0.0,
                reported_r_post=reported.r_post if reported else 0.0,
            )
        )
    rows.sort(key=lambda r: r.client_id)
    return RoundOutcome(
        adapter=new_adapter, rows=rows, state=new_state, accepted=sorted(factors), failed=rejected
    )
