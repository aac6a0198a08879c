"""Train one data owner for one round and upload its delta (the owner's only side effect)."""

from __future__ import annotations

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.federation import client_update
from fgrpo_core.manifest import ClientManifest
from fgrpo_io import exchange, runtime
from fgrpo_io.ledger import Ledger
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
def train_client_task(cfg: ExperimentConfig, client_id: str, round_idx: int) -> ClientManifest:
    """Download theta_{t-1}, run local GRPO, upload delta_k; return its manifest (never the delta)."""
    ledger = Ledger(cfg)
    delivered = ledger.delivered(round_idx, client_id)
    if delivered is not None:
        # A resumed round: this owner's delta is already committed; never train it twice.
        return delivered
    global_adapter = exchange.read_global(ledger.store, ledger.ident, round_idx - 1)

    def progress(step: int, total: int, reward: float) -> None:
        runtime.report_progress(round_idx, client_id, step, total, reward)

    with runtime.borrowed_bundle(cfg) as bundle:
        update = client_update(
            bundle, global_adapter, cfg, client_id, round_idx, runtime.work_dir(cfg, client_id), progress
        )
    return exchange.write_client_delta(
        ledger.store, ledger.ident, round_idx, update.delta, update.stats, cfg.federation.delta_dtype
    )
