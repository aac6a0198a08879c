"""Register each round's global adapter in the MLflow model registry (champion / challenger)."""

from __future__ import annotations

from typing import Any

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.models import save_adapter_folder
from fgrpo_io import exchange, runtime
from fgrpo_io.registry import register_round_model, registered_name
from fgrpo_io.store import make_store
from fgrpo_io.timing import Stopwatch
from fgrpo_io.tracking import tracker_for
from tasks.retry import is_transient


@task(
    name="register-adapter",
    task_run_name="register-round-{round_idx}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=3,
)
def register_task(cfg: ExperimentConfig, round_run_id: str, round_idx: int, score: float) -> dict[str, Any]:
    """Log theta_t as a PEFT folder on the round's run and register it as a model version.

    Returns the version, its alias, the champion and the task's ``timings`` (store I/O vs MLflow).
    """
    clock = Stopwatch("mlflow_s")
    adapter = exchange.read_global(clock.store(make_store(cfg.store)), exchange.identity(cfg), round_idx)
    folder = runtime.work_dir(cfg, "adapters", f"round-{round_idx:04d}")
    with runtime.borrowed_bundle(cfg, clock) as bundle:
        save_adapter_folder(bundle.model, adapter, folder)
    tracker = tracker_for(cfg)
    tracker.log_adapter_artifacts(round_run_id, folder, "adapter")
    result = register_round_model(
        tracker.client,
        registered_name(cfg),
        round_run_id,
        "adapter",
        round_idx,
        cfg.name,
        cfg.aggregation.strategy,
        score,
    )
    return {
        "version": result.version,
        "alias": result.alias,
        "champion_version": result.champion_version,
        "timings": clock.result(),
    }
