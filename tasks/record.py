"""A committed round's record: its MLflow run and series, its model version (champion / challenger),
and the live view's line.

The experiment flow submits it after the round and goes on to the next round: the record needs
only the stored round, and the next round's training needs nothing of the record. Records run one
after another (each waits for the one before), so the registry decides aliases in round order.
"""

from __future__ import annotations

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import FgrpoError
from fgrpo_core.models import save_adapter_folder
from fgrpo_core.types import RegistryOutcome, RoundResult
from fgrpo_io import exchange, runtime
from fgrpo_io.ledger import Ledger
from fgrpo_io.registry import AdapterIdentity, register_round_model, registered_name
from fgrpo_io.timing import timed
from tasks.retry import is_transient


def log_round(cfg: ExperimentConfig, parent_run_id: str, result: RoundResult) -> tuple[RoundResult, bool]:
    """Per-client series on the parent run and a nested round run; the result with its run id, and
    whether this call started that run.

    Idempotent: a round run already logged (a resumed or retried record) is found, not logged twice.
    """
    tracker = Ledger(cfg).tracker
    run = tracker.open_round_run(parent_run_id, result.round)
    if not run.logged:
        tracker.log_round(parent_run_id, run.run_id, cfg.name, result)
        tracker.finish_run(run.run_id)
    return result.model_copy(update={"mlflow_round_run_id": run.run_id}), run.started


def register_round(cfg: ExperimentConfig, result: RoundResult, new_run: bool = False) -> RoundResult:
    """Log theta_t as a PEFT folder on the round's run, register it, decide its alias.

    A refused or rolled-back round registers nothing (its head is a version already registered).
    ``new_run``: the round run was started by this record, so no version can come from it yet (the
    registry is not searched). Returns the result with its ``registry`` outcome.
    """
    if result.status != "committed":
        return result
    run_id = result.mlflow_round_run_id
    if run_id is None:
        raise FgrpoError(f"round {result.round}: log the round (log_round) before registering it")
    ledger = Ledger(cfg)
    existing = None if new_run else ledger.round_version(run_id, result.round)
    if existing is None:
        adapter = exchange.read_global(ledger.store, ledger.ident, result.round)
        folder = runtime.work_dir(cfg, "adapters", f"round-{result.round:04d}")
        save_adapter_folder(runtime.adapter_config(cfg), adapter, folder)
        ledger.tracker.log_adapter_artifacts(run_id, folder, "adapter")
    manifest = exchange.read_global_manifest(ledger.store, ledger.ident, result.round)
    identity = AdapterIdentity(ledger.ident.base_model_id, ledger.ident.base_revision, manifest.sha256)
    outcome = register_round_model(
        ledger.tracker.client,
        registered_name(cfg),
        run_id,
        "adapter",
        result.round,
        cfg.name,
        cfg.aggregation.strategy,
        result.macro_accuracy,
        existing_version=existing,
        identity=identity,
    )
    registry = RegistryOutcome(
        version=outcome.version, alias=outcome.alias, champion_version=outcome.champion_version
    )
    return result.model_copy(update={"registry": registry})


@task(
    name="record-round",
    task_run_name="record-round-{result.round}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=3,
)
@timed("mlflow_s")
def record_round_task(cfg: ExperimentConfig, parent_run_id: str | None, result: RoundResult) -> RoundResult:
    """Log round t under the parent run and register theta_t (tracking on), then tell the live view.

    Returns the result with its round run id and ``registry`` outcome (unchanged, tracking off).
    """
    if parent_run_id is not None:
        logged, new_run = log_round(cfg, parent_run_id, result)
        result = register_round(cfg, logged, new_run)
    # The CLI's live view prints the round's line once it is recorded (with its registry alias).
    runtime.report_event(runtime.ROUND_COMMITTED, report=result.model_dump(mode="json"))
    return result
