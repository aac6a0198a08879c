"""One federated round: owners train, the coordinator aggregates, evaluates and commits.

Its MLflow record (tasks/record.py) is the experiment flow's, alongside the next round.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import QuorumError
from fgrpo_core.types import RoundResult
from fgrpo_io.reports import artifact_key, failed_round_markdown, round_markdown
from flows.fan_out import run_owners
from flows.owner_sessions import OwnerSession
from tasks.aggregate import aggregate_task, commit_task
from tasks.evaluate_global import evaluate_candidate_task
from tasks.plan import committed_result_task


def _round_run_name() -> str:
    params = flow_run.parameters
    return f"{params['cfg'].name}-round-{params['round_idx']:04d}"


@flow(name="federated-round", flow_run_name=_round_run_name, validate_parameters=False)
def federated_round(cfg: ExperimentConfig, round_idx: int, owners: OwnerSession | None = None) -> RoundResult:
    """Round t: every owner trains from theta_{t-1}; the coordinator commits theta_t or refuses it.

    ``owners``: the experiment's warm owner runs (distributed mode), None otherwise.
    """
    result = committed_result_task(cfg, round_idx)
    if result is None:  # not committed yet (else: resumed after the commit, finish the rest)
        delivered, failed = run_owners(cfg, round_idx, owners)
        try:
            candidate = aggregate_task(cfg, round_idx, delivered, failed)
        except QuorumError as err:
            # Nothing was written: the previous global adapter stays. Say so where people look.
            create_markdown_artifact(
                markdown=failed_round_markdown(cfg.name, round_idx, str(err)),
                key=artifact_key(cfg.name, round_idx),
                description=f"{cfg.name} round {round_idx}: not committed (quorum)",
            )
            raise
        evaluation = evaluate_candidate_task(cfg, candidate)
        result = commit_task(cfg, candidate, evaluation)
    # Here, in the round's own run, not in its record: an API write from the record's thread met
    # the next round's first request and SQLite refused one of them (503, Prefect's 2 s backoff).
    create_markdown_artifact(
        markdown=round_markdown(cfg.name, result),
        key=artifact_key(cfg.name, round_idx),
        description=f"{cfg.name} round {round_idx}: per-client gains and weights",
    )
    return result
