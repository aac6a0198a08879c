"""MLflow side effects: the experiment's parent run, each round's metrics and table."""

from __future__ import annotations

from typing import Any

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_io.timing import Stopwatch, Timings
from fgrpo_io.tracking import MLFLOW_EXPERIMENT, flatten_config, tracker_for
from tasks.retry import is_transient


def _global_eval(evaluation: dict[str, Any]) -> dict[str, float]:
    """evaluate_task's result as metric names under "eval/" (see Tracker.log_round)."""
    global_eval = {"macro_accuracy": float(evaluation["macro_accuracy"])}
    for family, score in evaluation["families"].items():
        global_eval[f"{family}/accuracy"] = float(score["accuracy"])
        global_eval[f"{family}/mean_reward"] = float(score["mean_reward"])
    return global_eval


@task(name="start-tracking", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=3)
def start_tracking_task(cfg: ExperimentConfig) -> dict[str, Any]:
    """The experiment's parent run (reused when the experiment resumes); the full config as params.

    Returns its ``run_id`` and the task's ``timings``.
    """
    clock = Stopwatch("mlflow_s")
    tags = {"fgrpo.strategy": cfg.aggregation.strategy, "fgrpo.model": cfg.model.model_id}
    run_id = tracker_for(cfg).start_experiment_run(MLFLOW_EXPERIMENT, cfg.name, flatten_config(cfg), tags)
    return {"run_id": run_id, "timings": clock.result()}


@task(
    name="log-round",
    task_run_name="log-round-{round_idx}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=3,
)
def log_round_task(
    cfg: ExperimentConfig,
    parent_run_id: str,
    round_idx: int,
    rows: list[dict[str, Any]],
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """Per-client series on the parent run, a nested round run with the round table.

    Returns the round run's id (``round_run_id``) and the task's ``timings``.
    """
    clock = Stopwatch("mlflow_s")
    tracker = tracker_for(cfg)
    round_run_id = tracker.start_round_run(parent_run_id, round_idx)
    tracker.log_round(parent_run_id, round_run_id, round_idx, rows, _global_eval(evaluation))
    tracker.finish_run(round_run_id)
    return {"round_run_id": round_run_id, "timings": clock.result()}


@task(name="log-initial-evaluation", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=3)
def log_initial_evaluation_task(
    cfg: ExperimentConfig, parent_run_id: str, evaluation: dict[str, Any]
) -> Timings:
    """The initial adapter's global evaluation as step 0 of the parent run's ``eval/*`` series."""
    clock = Stopwatch("mlflow_s")
    tracker_for(cfg).log_initial_evaluation(parent_run_id, _global_eval(evaluation))
    return clock.result()


@task(name="finish-tracking", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=3)
def finish_tracking_task(cfg: ExperimentConfig, run_id: str, status: str = "FINISHED") -> Timings:
    """End the parent run; returns the task's timings."""
    clock = Stopwatch("mlflow_s")
    tracker_for(cfg).finish_run(run_id, status)
    return clock.result()
