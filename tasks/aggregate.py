"""The coordinator's round: theta_0 once, then aggregate a round's deltas and commit it (or refuse it)."""

from __future__ import annotations

from prefect import task

from fgrpo_core import downlink
from fgrpo_core.commit_gate import gate_reason
from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.federation import aggregate_streamed, server_probe
from fgrpo_core.manifest import ClientManifest
from fgrpo_core.types import Adapter, Candidate, EvalSummary, RoundResult, ServerState
from fgrpo_core.update_checks import Expected
from fgrpo_io import exchange, layout, pin, runtime
from fgrpo_io.ledger import Ledger
from fgrpo_io.timing import timed
from tasks.retry import is_transient


@task(name="initialise-global", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
@timed("store_io_s")
def initialise_task(cfg: ExperimentConfig) -> str:
    """Pin the config, write theta_0 (the shared initial adapter) and the empty state once; return
    theta_0's key. A resume with a config that differs from the pin fails here (ConfigPinError)."""
    ledger = Ledger(cfg)
    pin.pin_or_check(ledger.store, cfg)
    if ledger.initialised():
        return exchange.read_global_manifest(ledger.store, ledger.ident, 0).adapter_key
    with runtime.borrowed_bundle(cfg) as bundle:
        # The adapter as built, not the one a pooled bundle holds after an earlier task trained it.
        adapter = bundle.initial_adapter
    written = exchange.write_global_adapter(ledger.store, ledger.ident, 0, adapter)
    exchange.write_global_manifest(ledger.store, ledger.ident, 0, written, clients=[], strategy="init")
    exchange.write_state(ledger.store, ledger.ident, ServerState(round=0, global_key=written[0]))
    return written[0]


@task(
    name="aggregate-round",
    task_run_name="aggregate-round-{round_idx}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=3,
)
@timed("aggregate_s")
def aggregate_task(
    cfg: ExperimentConfig, round_idx: int, delivered: list[str], failed: dict[str, str]
) -> Candidate:
    """Aggregate round t from the owners that delivered; raise QuorumError below min_clients.

    Every owner's manifest is checked before its delta is read, and the delta before any
    arithmetic (fgrpo_core.update_checks); a bad one is recorded with its reason (a failed owner's
    comes with ``failed``: its own record of a permanent failure where it wrote one). Deltas are streamed: read from
    the store when the aggregation needs one, dropped after (one in memory at a time,
    fgrpo_core/coordinator.py). The aggregate is written as round t's candidate; nothing is
    committed here.
    """
    ledger = Ledger(cfg)
    store, ident = ledger.store, ledger.ident
    global_adapter = exchange.read_global(store, ident, round_idx - 1)
    state = exchange.read_state(store, ident, round_idx - 1)

    failures = dict(failed)
    expected: dict[str, Expected] = {}
    manifests: dict[str, ClientManifest] = {}
    for cid in sorted(delivered):
        expected[cid] = exchange.expected_update(
            ident, round_idx, cid, global_adapter, cfg.federation.delta_dtype
        )
        try:
            manifests[cid] = exchange.read_client_manifest(store, ident, expected[cid])
        except DeltaValidationError as err:
            failures[cid] = f"{err.reason}: {err}"

    def load(cid: str) -> Adapter:
        # Read again at each pass (sha256 checked each time): no delta outlives its use.
        return exchange.read_delta(store, manifests[cid], expected[cid])

    stats = {cid: m.stats for cid, m in manifests.items()}
    sizes = {cid: m.nbytes for cid, m in manifests.items()}
    with runtime.borrowed_bundle(cfg) as bundle:
        probe = server_probe(bundle, global_adapter, cfg)
        outcome = aggregate_streamed(
            global_adapter, stats, load, failures, state, cfg, round_idx, sizes, probe
        )
    theta, step = outcome.adapter, None
    encoding = cfg.federation.delta_dtype
    if encoding != "float32":
        # theta_t is what owners will decode from the step (fgrpo_core/downlink.py); the float32
        # bytes below hold exactly it, for readers without theta_{t-1}.
        theta, data = downlink.encoded_step(global_adapter, outcome.adapter, encoding)
        head = exchange.read_global_manifest(store, ident, round_idx - 1)
        parent = (head.adapter_key, head.sha256)
        step = exchange.write_global_step(store, ident, round_idx, parent, data, encoding)
    key, sha, nbytes = exchange.write_global_adapter(store, ident, round_idx, theta)
    return Candidate(
        round=round_idx,
        candidate_key=key,
        candidate_sha256=sha,
        candidate_nbytes=nbytes,
        rows=outcome.rows,
        accepted=outcome.accepted,
        state=outcome.state,
        step=step,
    )


@task(
    name="commit-round",
    task_run_name="commit-round-{candidate.round}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=3,
)
@timed("aggregate_s")
def commit_task(cfg: ExperimentConfig, candidate: Candidate, evaluation: EvalSummary) -> RoundResult:
    """The commit gate, then round t's manifest, result and state (the state, written last, commits).

    A refused round keeps theta_{t-1} as the head (its manifest names theta_{t-1}'s adapter) and
    the server statistics of round t-1; the refused candidate stays in the store as evidence.
    """
    ledger = Ledger(cfg)
    store, ident, t = ledger.store, ledger.ident, candidate.round
    adapter = exchange.read_adapter(store, candidate.candidate_key, candidate.candidate_sha256)
    head = ledger.head_evaluation(t)
    reason = gate_reason(
        adapter, evaluation.macro_accuracy, head.macro_accuracy, cfg.federation.max_eval_drop
    )
    if reason:
        previous = exchange.read_global_manifest(store, ident, t - 1)
        named = (previous.adapter_key, previous.sha256, previous.nbytes)
        state = exchange.read_state(store, ident, t - 1).model_copy(
            update={"round": t, "global_key": previous.adapter_key}
        )
        exchange.write_global_manifest(store, ident, t, named, clients=[], strategy="refused")
    else:
        named = (candidate.candidate_key, candidate.candidate_sha256, candidate.candidate_nbytes)
        state = candidate.state.model_copy(update={"global_key": candidate.candidate_key})
        exchange.write_global_manifest(
            store,
            ident,
            t,
            named,
            clients=candidate.accepted,
            strategy=cfg.aggregation.strategy,
            step=candidate.step,
        )
    result = RoundResult(
        round=t,
        status="refused" if reason else "committed",
        reason=reason,
        global_key=named[0],
        candidate_key=candidate.candidate_key,
        state_key=layout.state_key(ident.prefix, ident.experiment, t),
        rows=candidate.rows,
        evaluation=evaluation,
    )
    exchange.write_round_result(store, ident, result)
    exchange.write_state(store, ident, state)
    return result
