"""A whole federated experiment: initialise once, then rounds until R, resuming where it stopped."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.types import EvalSummary, RoundResult
from fgrpo_io.lease import Lease
from fgrpo_io.owner_pool import owner_cluster, round_task_runner
from flows.owner_sessions import owners_for
from flows.round import federated_round
from tasks.aggregate import initialise_task
from tasks.evaluate_global import initial_evaluation_task
from tasks.lease import release_lease_task, renew_lease_task, take_lease_task
from tasks.log import finish_tracking_task, log_initial_evaluation_task, start_tracking_task
from tasks.plan import first_round_task, read_results_task
from tasks.record import record_round_task


class ExperimentSummary(BaseModel):
    """What one invocation of the experiment flow returns (the CLI adds wall time and timings)."""

    model_config = ConfigDict(extra="forbid")

    experiment: str
    initial_global_key: str
    resumed_from_round: int
    initial_evaluation: EvalSummary
    mlflow_run_id: str | None
    rounds: list[RoundResult]


def _experiment_run_name() -> str:
    return f"{flow_run.parameters['cfg'].name}-experiment"


@flow(name="fgrpo-experiment", flow_run_name=_experiment_run_name, validate_parameters=False)
def run_experiment(cfg: ExperimentConfig) -> ExperimentSummary:
    """Run ``cfg.federation.rounds`` rounds; an interrupted experiment resumes after its last commit."""
    held = take_lease_task(cfg)  # one coordinator at a time, before anything is written
    try:
        with owner_cluster(cfg) as address:  # owner worker processes, when configured
            return _rounds(cfg, held, address)
    finally:
        release_lease_task(cfg, held)


def _rounds(cfg: ExperimentConfig, held: Lease, address: str | None) -> ExperimentSummary:
    initial_key = initialise_task(cfg)  # checks the config pin: before anything else is written
    parent_run_id = start_tracking_task(cfg) if cfg.tracking.enabled else None
    first, last_committed = first_round_task(cfg, parent_run_id)
    run_round = federated_round.with_options(task_runner=round_task_runner(cfg, address))
    # MLflow writes in order, one at a time: theta_0's evaluation, then each round's record.
    chain: list[PrefectFuture[Any]] = []
    records: list[PrefectFuture[RoundResult]] = []
    try:
        # Distributed: every owner's warm run starts now (its model loads during the initial
        # evaluation) and serves every round not yet committed.
        with owners_for(cfg, last_committed + 1, cfg.federation.rounds) as owners:
            initial = initial_evaluation_task(cfg)
            if parent_run_id is not None:
                chain.append(log_initial_evaluation_task.submit(cfg, parent_run_id, initial))
            results = read_results_task(cfg, list(range(1, first)))
            for t in range(first, cfg.federation.rounds + 1):
                _stop_if_a_record_failed(chain)
                held = renew_lease_task(cfg, held, t)
                committed = run_round(cfg, t, owners)
                # Round t's record runs alongside round t+1, after everything before it in the chain.
                record = record_round_task.submit(
                    cfg, parent_run_id, committed, return_state=False, wait_for=chain[-1:]
                )
                chain.append(record)
                records.append(record)
        for link in chain:  # every write done, in order (a resumed run may have no round after theta_0's log)
            link.result()
        results += [record.result() for record in records]
    except Exception:
        for link in chain:  # nothing may still write to the parent run once it is ended
            link.wait()
        # The parent run must not stay RUNNING: FAILED says so in the UI, and a rerun resumes it.
        if parent_run_id is not None:
            finish_tracking_task(cfg, parent_run_id, "FAILED")
        raise
    if parent_run_id is not None:
        finish_tracking_task(cfg, parent_run_id)
    return ExperimentSummary(
        experiment=cfg.name,
        initial_global_key=initial_key,
        resumed_from_round=last_committed,
        initial_evaluation=initial,
        mlflow_run_id=parent_run_id,
        rounds=results,
    )


def _stop_if_a_record_failed(chain: list[PrefectFuture[Any]]) -> None:
    """Raise a finished write's failure (theta_0's log or a record) before the next round; a rerun
    makes that write first.

    Asks the futures, not the API (a future's ``state`` reads the task run from it until someone
    waits on the future, and the API's task-run states lag behind the recorder's batches). The
    writes form a chain: none after an unfinished one has run.
    """
    for link in chain:
        try:
            link.result(timeout=0)
        except TimeoutError:
            return
