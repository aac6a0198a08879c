"""A warm owner's own tasks besides training and its pre-flight: wait for a round, report."""

from __future__ import annotations

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_io import rendezvous
from fgrpo_io.ledger import Ledger
from fgrpo_io.rendezvous import Readiness, SessionReport
from tasks.retry import is_transient

# How long an owner waits for theta_{t-1} beyond the round's own deadline: the coordinator's
# aggregation, evaluation, commit and tracking of round t-1 (a large model evaluates for minutes).
BETWEEN_ROUNDS_S = 1800.0


@task(
    name="wait-for-round",
    task_run_name="wait-{client_id}-round-{round_idx}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=2,
)
def wait_round_task(cfg: ExperimentConfig, client_id: str, session: str, round_idx: int) -> Readiness:
    """ "ready" once theta_{t-1} is committed; "closed" or "stopped" when the coordinator said so."""
    ledger = Ledger(cfg)
    timeout_s = cfg.federation.round_timeout_s + BETWEEN_ROUNDS_S
    return rendezvous.wait_for_round(ledger.store, ledger.ident, session, round_idx, timeout_s)


@task(
    name="report-owner-failure",
    task_run_name="report-{client_id}-round-{round_idx}-failed",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=2,
)
def report_failure_task(cfg: ExperimentConfig, client_id: str, round_idx: int, reason: str) -> None:
    """Tell the coordinator now that this owner's round failed (else it waits to the deadline)."""
    ledger = Ledger(cfg)
    rendezvous.write_failure(ledger.store, ledger.ident, client_id, round_idx, reason)


@task(name="report-owner-session", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
def report_session_task(cfg: ExperimentConfig, report: SessionReport) -> str:
    """Write what this run did (rounds, model loads) under the owner's prefix; return its key."""
    ledger = Ledger(cfg)
    return rendezvous.write_report(ledger.store, ledger.ident, report)
