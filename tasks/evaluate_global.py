"""Evaluate a global adapter on the global held-out set, per task family."""

from __future__ import annotations

from typing import Any

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.federation import evaluate_families
from fgrpo_core.partition import eval_sets
from fgrpo_io import exchange, runtime
from fgrpo_io.store import make_store
from fgrpo_io.timing import Stopwatch
from tasks.retry import is_transient


@task(
    name="evaluate-global",
    task_run_name="evaluate-round-{round_idx}",
    retries=1,
    retry_condition_fn=is_transient,
    retry_delay_seconds=2,
)
def evaluate_task(cfg: ExperimentConfig, round_idx: int) -> dict[str, Any]:
    """Greedy accuracy and mean reward of theta_t per family, their macro average, and the
    task's ``timings`` (store I/O vs evaluation; the flows take them out of the evaluation)."""
    clock = Stopwatch("evaluate_s")
    store = clock.store(make_store(cfg.store))
    adapter = exchange.read_global(store, exchange.identity(cfg), round_idx)
    with runtime.borrowed_bundle(cfg, clock) as bundle:
        result = evaluate_families(bundle, adapter, eval_sets(cfg).eval, cfg)
    return {
        "families": {k: v.model_dump() for k, v in result.families.items()},
        "macro_accuracy": result.macro_accuracy,
        "timings": clock.result(),
    }
