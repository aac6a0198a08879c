"""Poison with few deltas (issue 11, attack 1): norm screening that works at any K.

With two deltas the round's median is their mean, and with honest deltas of exactly zero it is 0:
neither can single out a x1e30 delta. The bounds of fgrpo_core/screening.py (the global adapter's
norm, earlier rounds' accepted norms) do, and the next round trains and commits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fgrpo_core.deltas import delta_norm
from fgrpo_core.federation import ClientUpdate, RoundOutcome, aggregate_round, client_update
from fgrpo_core.runner import transport
from fgrpo_core.types import Adapter
from tests.faults.shared import Round1, normalised_reward, replace_update, row_of, same_adapter

pytestmark = [pytest.mark.slow]


def _scaled(delta: Adapter, factor: float) -> Adapter:
    return {k: factor * v for k, v in delta.items()}


def _next_round_commits(round1: Round1, outcome: RoundOutcome, clients: tuple[str, ...]) -> RoundOutcome:
    """Round 2 from the round-1 outcome: the honest ``clients`` train from it; the round commits."""
    cfg = round1.config(federation={"min_clients": 1})
    updates, sizes = {}, {}
    for cid in clients:
        update = client_update(round1.bundle, outcome.adapter, cfg, cid, 2, Path(cfg.output_dir) / "work")
        delta, sizes[cid] = transport(update.delta, cfg)
        updates[cid] = ClientUpdate(delta=delta, stats=update.stats)
    return aggregate_round(outcome.adapter, updates, {}, outcome.state, cfg, 2, sizes)


def _max_abs(adapter: Adapter) -> float:
    return max(float(v.abs().max()) for v in adapter.values())


@pytest.mark.parametrize("action", ["reject", "clip"])
def test_two_deltas_one_scaled_1e30_is_held_to_the_global_adapter_bound(round1: Round1, action: str) -> None:
    # Prepare: owner-c is late; owner-b uploads 1e30 x its delta; min_clients 1 lets 2 deltas commit.
    cfg = round1.config(federation={"min_clients": 1}, aggregation={"norm_action": action})
    updates = replace_update(round1, "owner-b", delta=_scaled(round1.honest["owner-b"].delta, 1e30))
    del updates["owner-c"]
    honest_pair = round1.aggregate({c: round1.honest[c] for c in ("owner-a", "owner-b")}, cfg)
    bound = cfg.aggregation.max_delta_global_ratio * delta_norm(round1.theta0)
    # Execute
    outcome = round1.aggregate(updates, cfg)
    after = _next_round_commits(round1, outcome, ("owner-a", "owner-b"))
    # Assert: the round's median (the pair's mean) could not see it; the global adapter's norm did.
    row = row_of(outcome, "owner-b")
    norm = delta_norm(updates["owner-b"].delta)
    if action == "reject":
        assert not row.accepted and row.weight == 0.0
        assert row.reason.startswith(f"norm {norm:.4g} > 1.0 x initial global adapter norm ")
        assert "aggregation.max_delta_global_ratio" in row.reason
        assert same_adapter(
            outcome.adapter, round1.aggregate({"owner-a": round1.honest["owner-a"]}, cfg).adapter
        )
    else:
        assert (
            row.accepted
            and row.clipped
            and row.reason.startswith(f"norm clipped: {norm:.4g} -> 1 x initial global")
        )
        assert row.weight == pytest.approx(row_of(honest_pair, "owner-b").weight)
        shift = delta_norm({k: outcome.adapter[k] - honest_pair.adapter[k] for k in outcome.adapter})
        assert shift <= cfg.aggregation.server_lr * row.weight * (
            bound + delta_norm(round1.honest["owner-b"].delta)
        )
    assert _max_abs(outcome.adapter) < 10.0  # the poisoned global had max|theta| = 2e28
    assert after.accepted == ["owner-a", "owner-b"] and all(
        torch.isfinite(v).all() for v in after.adapter.values()
    )
    harm = normalised_reward(round1.evaluate(honest_pair.adapter)) - normalised_reward(
        round1.evaluate(outcome.adapter)
    )
    print(
        f"\n[any-k {action}] weight={row.weight:.4f} harm={harm:+.4f} max|theta|={_max_abs(outcome.adapter):.4g}"
    )


def test_zero_honest_deltas_do_not_disable_screening(round1: Round1) -> None:
    # Prepare: owners a and c had all-equal groups (exact zero deltas); owner-b uploads a huge one.
    zero = {k: torch.zeros_like(v) for k, v in round1.honest["owner-a"].delta.items()}
    updates = replace_update(round1, "owner-b", delta=_scaled(round1.honest["owner-b"].delta, 1e30))
    updates = {
        **updates,
        "owner-a": ClientUpdate(delta=zero, stats=round1.honest["owner-a"].stats),
        "owner-c": ClientUpdate(delta=zero, stats=round1.honest["owner-c"].stats),
    }
    cfg = round1.config(aggregation={"norm_action": "reject"})
    # Execute
    outcome = round1.aggregate(updates, cfg)
    # Assert: the median is 0, yet owner-b is rejected by the global adapter's bound; theta_0 stays.
    row = row_of(outcome, "owner-b")
    assert not row.accepted and row.weight == 0.0 and "x initial global adapter norm" in row.reason
    assert outcome.accepted == ["owner-a", "owner-c"]
    assert same_adapter(outcome.adapter, round1.theta0)
    print(f"\n[zero-median] weight={row.weight:.4f} reason={row.reason}")


def test_earlier_rounds_bound_a_delta_the_round_median_cannot(round1: Round1) -> None:
    # Prepare: round 1 committed (its median accepted norm remembered); in round 2 owner-b sends
    # a delta above 10 x that median but below the global adapter's norm, owner-a its honest one.
    cfg = round1.config(federation={"min_clients": 1}, aggregation={"norm_action": "reject"})
    first = round1.outcome
    history = first.state.norm_history
    honest_norms = sorted(delta_norm(round1.honest[c].delta) for c in round1.honest)
    assert history == [pytest.approx(honest_norms[1])]
    ceiling = cfg.aggregation.max_delta_history_ratio * history[0]
    global_norm = delta_norm(round1.theta0)  # the global bound's reference is theta_0's norm
    assert ceiling < global_norm  # so that the history bound, not the global one, decides
    target = (ceiling + global_norm) / 2
    updates = {
        cid: ClientUpdate(
            delta=_scaled(round1.honest[cid].delta, factor),
            stats=round1.honest[cid].stats.model_copy(update={"round": 2}),
        )
        for cid, factor in (
            ("owner-a", 1.0),
            ("owner-b", target / delta_norm(round1.honest["owner-b"].delta)),
        )
    }
    # Execute
    outcome = aggregate_round(first.adapter, updates, {}, first.state, cfg, 2, round1.sizes)
    # Assert
    row = row_of(outcome, "owner-b")
    assert not row.accepted and row.weight == 0.0
    assert row.reason.startswith(f"norm {target:.4g} > 10.0 x median of earlier rounds {history[0]:.4g}")
    assert outcome.state.norm_history == [
        history[0],
        pytest.approx(delta_norm(round1.honest["owner-a"].delta)),
    ]


def test_a_clipped_delta_does_not_raise_the_history_it_was_clipped_to(round1: Round1) -> None:
    # Prepare: round 2 of two owners; owner-b sends 1000 x its honest delta and is clipped.
    cfg = round1.config(federation={"min_clients": 1}, aggregation={"norm_action": "clip"})
    first = round1.outcome
    updates = {
        cid: ClientUpdate(
            delta=_scaled(round1.honest[cid].delta, factor),
            stats=round1.honest[cid].stats.model_copy(update={"round": 2}),
        )
        for cid, factor in (("owner-a", 1.0), ("owner-b", 1000.0))
    }
    # Execute
    outcome = aggregate_round(first.adapter, updates, {}, first.state, cfg, 2, round1.sizes)
    # Assert: owner-b clipped and weighted; the history gains owner-a's norm alone, not the
    # median of owner-a's and the bound (which owner-b could push up round after round).
    row = row_of(outcome, "owner-b")
    assert row.accepted and row.clipped and row.reason.startswith("norm clipped: ")
    assert outcome.state.norm_history == [
        first.state.norm_history[0],
        pytest.approx(delta_norm(round1.honest["owner-a"].delta)),
    ]
    # The global bound stays theta_0's norm, however far accepted deltas moved the global.
    assert outcome.state.initial_global_norm == pytest.approx(delta_norm(round1.theta0))
    print(f"\n[clipped-history] weight={row.weight:.4f} reason={row.reason}")
