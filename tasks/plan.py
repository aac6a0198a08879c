"""Read-only tasks that ask the ledger what is committed and what is left to do (fgrpo_io/ledger.py)."""

from __future__ import annotations

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.types import RoundResult
from fgrpo_io.ledger import Ledger
from fgrpo_io.timing import timed
from tasks.retry import is_transient


@task(name="first-round-to-run", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
@timed("store_io_s")
def first_round_task(cfg: ExperimentConfig, parent_run_id: str | None) -> tuple[int, int]:
    """(the round to start from, the last committed round): the first is the last committed round
    if MLflow lacks part of it, else the next one."""
    ledger = Ledger(cfg)
    return ledger.first_round_to_run(parent_run_id), ledger.last_committed() or 0


@task(
    name="committed-result",
    task_run_name="committed-result-{round_idx}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=2,
)
@timed("store_io_s")
def committed_result_task(cfg: ExperimentConfig, round_idx: int) -> RoundResult | None:
    """Round t's stored result if it is committed (the round flow then trains nothing for it)."""
    return Ledger(cfg).result(round_idx)


@task(name="read-round-results", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
@timed("store_io_s")
def read_results_task(cfg: ExperimentConfig, rounds: list[int]) -> list[RoundResult]:
    """The stored results of the committed rounds among ``rounds``."""
    ledger = Ledger(cfg)
    return [r for r in (ledger.result(t) for t in rounds) if r is not None]
