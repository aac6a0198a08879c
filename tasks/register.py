"""Register each committed round's global adapter in the MLflow model registry (champion / challenger)."""

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


@task(
    name="register-adapter",
    task_run_name="register-round-{result.round}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=3,
)
@timed("mlflow_s")
def register_task(cfg: ExperimentConfig, result: RoundResult) -> RoundResult:
    """Log theta_t as a PEFT folder on the round's run, register it, decide its alias.

    A refused or rolled-back round registers nothing (its head is a version already registered).
    Returns the result with its ``registry`` outcome.
    """
    if result.status != "committed":
        return result
    run_id = result.mlflow_round_run_id
    if run_id is None:
        raise FgrpoError(f"round {result.round}: log the round (log_round_task) before registering it")
    ledger = Ledger(cfg)
    existing = ledger.round_version(run_id, result.round)
    if existing is None:
        adapter = exchange.read_global(ledger.store, ledger.ident, result.round)
        folder = runtime.work_dir(cfg, "adapters", f"round-{result.round:04d}")
        with runtime.borrowed_bundle(cfg) as bundle:
            save_adapter_folder(bundle.model, adapter, folder)
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
