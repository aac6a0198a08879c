"""Evaluate a global adapter (or a round's candidate) on the global held-out set, per family."""

from __future__ import annotations

import math

from prefect import task

from fgrpo_core.commit_gate import non_finite_keys
from fgrpo_core.config import ExperimentConfig
from fgrpo_core.federation import evaluate_families
from fgrpo_core.partition import eval_sets
from fgrpo_core.types import Adapter, Candidate, EvalSummary
from fgrpo_io import exchange, layout, runtime
from fgrpo_io.ledger import Ledger
from fgrpo_io.store import put_json
from fgrpo_io.timing import timed
from tasks.retry import is_transient


def _evaluate(cfg: ExperimentConfig, adapter: Adapter) -> EvalSummary:
    if non_finite_keys(adapter):
        # Generating from NaN weights crashes the sampler; the commit gate refuses it anyway.
        return EvalSummary(families={}, macro_accuracy=math.nan)
    with runtime.borrowed_bundle(cfg) as bundle:
        return EvalSummary.of(evaluate_families(bundle, adapter, eval_sets(cfg).eval, cfg))


@task(
    name="evaluate-candidate",
    task_run_name="evaluate-round-{candidate.round}",
    retries=1,
    retry_condition_fn=is_transient,
    retry_delay_seconds=2,
)
@timed("evaluate_s")
def evaluate_candidate_task(cfg: ExperimentConfig, candidate: Candidate) -> EvalSummary:
    """Greedy accuracy and mean reward of round t's aggregate per family, and their macro average."""
    ledger = Ledger(cfg)
    adapter = exchange.read_adapter(
        ledger.store, candidate.candidate_key, candidate.candidate_sha256, candidate.candidate_nbytes
    )
    return _evaluate(cfg, adapter)


@task(name="evaluate-initial", retries=1, retry_condition_fn=is_transient, retry_delay_seconds=2)
@timed("evaluate_s")
def initial_evaluation_task(cfg: ExperimentConfig) -> EvalSummary:
    """theta_0's evaluation, computed once per experiment and kept in the store (reports start there)."""
    ledger = Ledger(cfg)
    stored = ledger.initial_evaluation()
    if stored is not None:
        return stored
    evaluation = _evaluate(cfg, exchange.read_global(ledger.store, ledger.ident, 0))
    key = layout.initial_evaluation_key(ledger.ident.prefix, ledger.ident.experiment)
    put_json(ledger.store, key, evaluation.model_dump(mode="json"))
    return evaluation
