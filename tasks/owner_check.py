"""An owner's own check before it trains, and the record of a permanent failure (distributed mode)."""

from __future__ import annotations

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.owner_failure import OwnerFailure, from_problems
from fgrpo_io import runtime
from fgrpo_io.failures import write_owner_failure
from fgrpo_io.ledger import Ledger
from tasks.retry import is_transient


@task(name="check-owner", task_run_name="check-{client_id}-round-{round_idx}")
def check_owner_task(cfg: ExperimentConfig, client_id: str, round_idx: int) -> OwnerFailure | None:
    """Pre-flight of this owner (its model, data and reward, `fgrpo check`); its failure, if any.

    It reads local files only; the model it loads goes to this process's pool, where the training
    task borrows it, so checking costs no second load.
    """
    from fgrpo_core.preflight import preflight  # loads the data and reward modules: owners only

    return from_problems(client_id, round_idx, preflight(cfg, client_id, load=runtime.preload))


@task(
    name="record-owner-failure",
    task_run_name="record-failure-{failure.client_id}-round-{failure.round}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=2,
)
def record_failure_task(cfg: ExperimentConfig, failure: OwnerFailure) -> str:
    """Write the owner's permanent failure under its own round prefix, for the coordinator's table."""
    ledger = Ledger(cfg)
    return write_owner_failure(ledger.store, ledger.ident, failure)
