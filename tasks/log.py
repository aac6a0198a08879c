"""MLflow side effects: the experiment's parent run, the initial evaluation, each round's result."""

from __future__ import annotations

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.types import EvalSummary, RoundResult
from fgrpo_io.ledger import Ledger
from fgrpo_io.timing import timed
from fgrpo_io.tracking import flatten_config, mlflow_experiment_name
from tasks.retry import is_transient


@task(name="start-tracking", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=3)
@timed("mlflow_s")
def start_tracking_task(cfg: ExperimentConfig) -> str:
    """The experiment's parent run id (an interrupted one is resumed); the full config as params."""
    ledger = Ledger(cfg)
    tags = {"fgrpo.strategy": cfg.aggregation.strategy, "fgrpo.model": cfg.model.model_id}
    mlflow_experiment = mlflow_experiment_name(cfg.name)
    resume = ledger.parent_run_to_resume(mlflow_experiment)
    return ledger.tracker.start_experiment_run(mlflow_experiment, cfg.name, flatten_config(cfg), tags, resume)


@task(name="log-initial-evaluation", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=3)
@timed("mlflow_s")
def log_initial_evaluation_task(cfg: ExperimentConfig, parent_run_id: str, evaluation: EvalSummary) -> None:
    """theta_0's global evaluation as step 0 of the parent run's ``eval/*`` series, once."""
    ledger = Ledger(cfg)
    if not ledger.initial_evaluation_logged(parent_run_id):
        ledger.tracker.log_initial_evaluation(parent_run_id, evaluation)


@task(
    name="log-round",
    task_run_name="log-round-{result.round}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=3,
)
@timed("mlflow_s")
def log_round_task(cfg: ExperimentConfig, parent_run_id: str, result: RoundResult) -> RoundResult:
    """Per-client series on the parent run and a nested round run; the result with its run id."""
    ledger = Ledger(cfg)
    found = ledger.round_run(result.round, parent_run_id)
    run_id = found[0] if found else ledger.tracker.start_round_run(parent_run_id, result.round)
    if not (found and found[1]):
        ledger.tracker.log_round(parent_run_id, run_id, cfg.name, result)
        ledger.tracker.finish_run(run_id)
    return result.model_copy(update={"mlflow_round_run_id": run_id})


@task(name="finish-tracking", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=3)
@timed("mlflow_s")
def finish_tracking_task(cfg: ExperimentConfig, run_id: str, status: str = "FINISHED") -> None:
    """End the parent run."""
    Ledger(cfg).tracker.finish_run(run_id, status)
