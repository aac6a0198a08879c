"""A whole federated experiment: initialise once, then rounds until R, resuming where it stopped."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from fgrpo_core.config import ExperimentConfig
from fgrpo_io.timing import add
from flows.round import federated_round
from tasks.aggregate import initialise_task, last_committed_round_task
from tasks.evaluate_global import evaluate_task
from tasks.log import finish_tracking_task, log_initial_evaluation_task, start_tracking_task
from tasks.report import first_unreported_round_task, read_reports_task, write_report_task


def _experiment_run_name() -> str:
    return f"{flow_run.parameters['cfg'].name}-experiment"


@flow(name="fgrpo-experiment", flow_run_name=_experiment_run_name, validate_parameters=False)
def run_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run ``cfg.federation.rounds`` rounds; an interrupted experiment resumes after its last commit.

    ``timings`` sums the parts every task of this invocation measured (fgrpo_io/timing.py); the
    caller, who knows the wall time, adds ``orchestration_s``.
    """
    initialised = initialise_task(cfg)
    parts = [initialised["timings"]]
    last_committed = last_committed_round_task(cfg)
    # A round committed just before an interruption may lack its report: it is finished first.
    first = first_unreported_round_task(cfg, last_committed)
    parent_run_id = None
    if cfg.tracking.enabled:
        tracking = start_tracking_task(cfg)
        parts.append(tracking["timings"])
        parent_run_id = tracking["run_id"]
    # Round 0 (the initial adapter) is kept like any round, so reports and plots start from it;
    # a resumed experiment reads it back instead of evaluating theta_0 again.
    stored = read_reports_task(cfg, [0])
    if stored:
        initial = stored[0]["evaluation"]
    else:
        initial = evaluate_task(cfg, 0)
        parts.append(initial.pop("timings"))
        write_report_task(cfg, 0, {"round": 0, "rows": [], "evaluation": initial})
    if parent_run_id is not None:
        parts.append(log_initial_evaluation_task(cfg, parent_run_id, initial))
    run_round = federated_round.with_options(
        task_runner=ThreadPoolTaskRunner(max_workers=cfg.federation.max_parallel_clients)  # type: ignore[arg-type]
    )
    try:
        for round_idx in range(first, cfg.federation.rounds + 1):
            parts.append(run_round(cfg, round_idx, parent_run_id)["timings"])
    except Exception:
        # The parent run must not stay RUNNING: FAILED says so in the UI, and a rerun resumes it.
        if parent_run_id is not None:
            finish_tracking_task(cfg, parent_run_id, "FAILED")
        raise
    reports = read_reports_task(cfg, list(range(1, cfg.federation.rounds + 1)))
    if parent_run_id is not None:
        parts.append(finish_tracking_task(cfg, parent_run_id))
    return {
        "experiment": cfg.name,
        "initial_global_key": initialised["global_key"],
        "resumed_from_round": last_committed,
        "initial_evaluation": initial,
        "mlflow_run_id": parent_run_id,
        "rounds": reports,
        "timings": add(parts),
    }
