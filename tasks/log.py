"""MLflow side effects: the experiment's parent run and the initial evaluation (rounds: tasks/record.py)."""

from __future__ import annotations

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.types import EvalSummary
from fgrpo_io.ledger import Ledger
from fgrpo_io.timing import timed
from fgrpo_io.tracking import mlflow_experiment_name
from fgrpo_io.tracking_config import flatten_config
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


@task(name="finish-tracking", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=3)
@timed("mlflow_s")
def finish_tracking_task(cfg: ExperimentConfig, run_id: str, status: str = "FINISHED") -> None:
    """End the parent run."""
    Ledger(cfg).tracker.finish_run(run_id, status)
