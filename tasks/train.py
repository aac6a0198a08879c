"""Train one data owner for one round and upload its delta (the owner's only side effect)."""

from __future__ import annotations

from typing import Any

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.federation import client_update
from fgrpo_core.manifest import ClientManifest
from fgrpo_io import exchange, runtime
from fgrpo_io.store import make_store
from fgrpo_io.timing import Stopwatch
from tasks.retry import is_transient


@task(
    name="train-client",
    task_run_name="train-{client_id}-round-{round_idx}",
    retries=1,
    retry_condition_fn=is_transient,  # the upload is idempotent (written once); a retry re-trains deterministically
    retry_delay_seconds=5,
)
def train_client_task(cfg: ExperimentConfig, client_id: str, round_idx: int) -> dict[str, Any]:
    """Download theta_{t-1}, run local GRPO, upload delta_k and its manifest.

    Returns the manifest's key, the scalar stats and the task's timings (store I/O vs training);
    the delta itself never leaves the store.
    """
    clock = Stopwatch("train_s")
    store = clock.store(make_store(cfg.store))
    ident = exchange.identity(cfg)
    committed = exchange.committed_client_manifest(store, ident, round_idx, client_id)
    if committed is not None:
        # A resumed round: this owner's delta is already committed; never train it twice.
        return _result(committed, clock)
    global_adapter = exchange.read_global(store, ident, round_idx - 1)

    def progress(step: int, total: int, reward: float) -> None:
        runtime.report_progress(round_idx, client_id, step, total, reward)

    with runtime.borrowed_bundle(cfg, clock) as bundle:
        update = client_update(
            bundle, global_adapter, cfg, client_id, round_idx, runtime.work_dir(cfg, client_id), progress
        )
    _, manifest = exchange.write_client_delta(
        store, ident, round_idx, update.delta, update.stats, cfg.federation.delta_dtype
    )
    return _result(manifest, clock)


def _result(manifest: ClientManifest, clock: Stopwatch) -> dict[str, Any]:
    return {
        "client_id": manifest.client_id,
        "delta_key": manifest.delta_key,
        "nbytes": manifest.nbytes,
        "stats": manifest.stats.model_dump(),
        "timings": clock.result(),
    }
