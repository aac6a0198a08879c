"""Train one data owner for one round and upload its delta (the owner's only side effect)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.states import Cancelled, State

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import RoundClosedError
from fgrpo_core.federation import client_update
from fgrpo_core.manifest import ClientManifest
from fgrpo_io import exchange, runtime
from fgrpo_io.ledger import Ledger
from fgrpo_io.rendezvous import RoundWatch
from fgrpo_io.timing import timed
from tasks.retry import is_transient


@task(
    name="train-client",
    task_run_name="train-{client_id}-round-{round_idx}",
    retries=1,
    retry_condition_fn=is_transient,  # the upload is idempotent (written once); a retry re-trains deterministically
    retry_delay_seconds=5,
)
@timed("train_s")
def train_client_task(
    cfg: ExperimentConfig, client_id: str, round_idx: int, session: str | None = None
) -> ClientManifest | State[Any]:
    """Download theta_{t-1}, run local GRPO, upload delta_k; return its manifest (never the delta).

    ``session``: a warm owner's session id (distributed mode), None when embedded. With it, the
    training stops at the step after the coordinator's closed marker of round t (or the
    session's stop marker) appears, and the task run ends Cancelled with nothing uploaded.
    """
    ledger = Ledger(cfg)
    delivered = ledger.delivered(round_idx, client_id)
    if delivered is not None:
        # A resumed round: this owner's delta is already committed; never train it twice.
        return delivered
    global_adapter = exchange.read_global(ledger.store, ledger.ident, round_idx - 1)
    watch = None if session is None else RoundWatch(ledger.store, ledger.ident, session, round_idx)
    reached = [0, cfg.grpo.local_steps]  # the last step reported, of how many

    def progress(step: int, total: int, reward: float) -> None:
        runtime.report_progress(round_idx, client_id, step, total, reward)
        reached[:] = [step, total]
        if watch is not None:
            watch.poll()  # raises RoundClosedError out of the trainer at a marker

    try:
        with runtime.borrowed_bundle(cfg) as bundle:
            update = client_update(
                bundle, global_adapter, cfg, client_id, round_idx, runtime.work_dir(cfg, client_id), progress
            )
        if watch is not None:
            watch.check()  # closed during the final evaluation: a late upload would be ignored
    except RoundClosedError as closed:
        # Not a failure (the coordinator has recorded this owner as late): never retried.
        return Cancelled(
            message=f"{closed}: stopped after step {reached[0]} of {reached[1]}, nothing uploaded"
        )
    return exchange.write_client_delta(
        ledger.store, ledger.ident, round_idx, update.delta, update.stats, cfg.federation.delta_dtype
    )
