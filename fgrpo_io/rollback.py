"""Rollback: make an earlier committed global the head again, as a new round (nothing is lost).

Rolling back from head H to round T writes round H+1 like a refused round: its manifest names
theta_T's adapter, its result says ``rolled_back`` with the operator's reason and carries theta_T's
evaluation (the commit gate's reference from then on), and its state is round T's server state
(baselines, scales, norm history). Rounds T+1..H stay in the store as they were.
"""

from __future__ import annotations

from fgrpo_core.errors import FgrpoError
from fgrpo_core.types import RoundResult
from fgrpo_io import exchange, layout
from fgrpo_io.ledger import Ledger


class RollbackError(FgrpoError):
    """The requested rollback is not possible; the message names the rounds that are."""


def _targets(ledger: Ledger, head: int) -> list[int]:
    """Rounds whose commit made a new global the head (0 is theta_0)."""
    results = {t: ledger.result(t) for t in range(1, head + 1)}
    return [0] + [t for t, r in results.items() if r is not None and r.status == "committed"]


def rollback(ledger: Ledger, to_round: int, reason: str) -> RoundResult:
    """Write round H+1 that restores theta_``to_round``; return its result."""
    name = ledger.cfg.name
    head = ledger.last_committed()
    if head is None:
        raise RollbackError(f"experiment {name!r} has no committed round; run it first")
    targets = _targets(ledger, head)
    if to_round not in targets or to_round == head:
        raise RollbackError(
            f"experiment {name!r}: cannot roll back to round {to_round} (the head is round {head}); "
            f"choose one of the rounds that committed a new global: {[t for t in targets if t != head]}"
        )
    store, ident, t = ledger.store, ledger.ident, head + 1
    target = ledger.result(to_round) if to_round else None
    evaluation = target.evaluation if target is not None else ledger.initial_evaluation()
    if evaluation is None:
        raise RollbackError(
            f"experiment {name!r}: theta_0 has no stored evaluation; run the experiment first"
        )
    restored = exchange.read_global_manifest(store, ident, to_round)
    named = (restored.adapter_key, restored.sha256, restored.nbytes)
    state = exchange.read_state(store, ident, to_round).model_copy(
        update={"round": t, "global_key": restored.adapter_key}
    )
    exchange.write_global_manifest(store, ident, t, named, clients=[], strategy="rollback")
    result = RoundResult(
        round=t,
        status="rolled_back",
        reason=f"rolled back to round {to_round}" + (f": {reason}" if reason else ""),
        global_key=restored.adapter_key,
        candidate_key=restored.adapter_key,
        state_key=layout.state_key(ident.prefix, ident.experiment, t),
        rows=[],
        evaluation=evaluation,
    )
    exchange.write_round_result(store, ident, result)
    exchange.write_state(store, ident, state)  # written last: it commits round t
    return result
