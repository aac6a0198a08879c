"""A whole federated experiment: initialise once, then rounds until R, resuming where it stopped."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from fgrpo_core.config import ExperimentConfig
from flows.round import federated_round
from tasks.aggregate import initialise_task, last_committed_round_task
from tasks.evaluate import evaluate_task
from tasks.report import read_reports_task
from tasks.tracking import finish_tracking_task, start_tracking_task


def _experiment_run_name() -> str:
    return f"{flow_run.parameters['cfg'].name}-experiment"


@flow(name="fgrpo-experiment", flow_run_name=_experiment_run_name, validate_parameters=False)
def run_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run ``cfg.federation.rounds`` rounds; an interrupted experiment resumes after its last commit."""
    global_key = initialise_task(cfg)
    first = last_committed_round_task(cfg) + 1
    parent_run_id = start_tracking_task(cfg) if cfg.tracking.enabled else None
    initial = evaluate_task(cfg, 0)
    run_round = federated_round.with_options(
        task_runner=ThreadPoolTaskRunner(max_workers=cfg.federation.max_parallel_clients)  # type: ignore[arg-type]
    )
    for round_idx in range(first, cfg.federation.rounds + 1):
        run_round(cfg, round_idx, parent_run_id)
    reports = read_reports_task(cfg, list(range(1, cfg.federation.rounds + 1)))
    if parent_run_id is not None:
        finish_tracking_task(cfg, parent_run_id)
    return {
        "experiment": cfg.name,
        "initial_global_key": global_key,
        "resumed_from_round": first - 1,
        "initial_evaluation": initial,
        "mlflow_run_id": parent_run_id,
        "rounds": reports,
    }
