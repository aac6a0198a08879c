"""Aggregate a round: read and validate the deltas, weight them, commit the new global adapter."""

from __future__ import annotations

from typing import Any

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.federation import ClientUpdate, aggregate_round, probe_stats
from fgrpo_core.partition import client_data, eval_sets
from fgrpo_core.types import ClientStats, ServerState
from fgrpo_io import exchange, layout, runtime
from fgrpo_io.store import make_store
from fgrpo_io.timing import Stopwatch
from tasks.retry import is_transient


@task(name="initialise-global", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
def initialise_task(cfg: ExperimentConfig) -> dict[str, Any]:
    """Write theta_0 (the shared initial adapter) and the empty state, once per experiment.

    Returns theta_0's key (``global_key``) and the task's ``timings``.
    """
    clock = Stopwatch("store_io_s")
    store = clock.store(make_store(cfg.store))
    ident = exchange.identity(cfg)
    if exchange.last_committed_round(store, ident) is not None:
        key = exchange.read_global_manifest(store, ident, 0).adapter_key
        return {"global_key": key, "timings": clock.result()}
    with runtime.borrowed_bundle(cfg, clock) as bundle:
        # The adapter as built, not the one a pooled bundle holds after an earlier task trained it.
        adapter = bundle.initial_adapter
    key = exchange.write_global(store, ident, 0, adapter, clients=[], strategy="init")
    exchange.write_state(store, ident, ServerState(round=0, global_key=key))
    return {"global_key": key, "timings": clock.result()}


@task(
    name="aggregate-round",
    task_run_name="aggregate-round-{round_idx}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=3,
)
def aggregate_task(
    cfg: ExperimentConfig, round_idx: int, delivered: list[str], failed: dict[str, str]
) -> dict[str, Any]:
    """Commit round t from the clients that delivered; raise QuorumError below min_clients.

    Every delta passes the manifest and sha256 checks here before any arithmetic; a client that
    fails them is recorded with its reason. The state file written last is the commit marker.
    The result's ``timings`` split store I/O from validation and arithmetic (``aggregate_s``).
    """
    clock = Stopwatch("aggregate_s")
    store = clock.store(make_store(cfg.store))
    ident = exchange.identity(cfg)
    committed = exchange.read_committed_round(store, ident, round_idx)
    if committed is not None:
        # Resumed after this round's commit (its report was not written): return the commit.
        return {**committed, "timings": clock.result()}
    global_adapter = exchange.read_global(store, ident, round_idx - 1)
    state = exchange.read_state(store, ident, round_idx - 1)

    failures = dict(failed)
    updates: dict[str, ClientUpdate] = {}
    sizes: dict[str, int] = {}
    for cid in sorted(delivered):
        try:
            delta, manifest = exchange.read_client_delta(store, ident, round_idx, cid)
        except DeltaValidationError as err:
            failures[cid] = f"{err.reason}: {err}"
            continue
        updates[cid] = ClientUpdate(delta=delta, stats=manifest.stats)
        sizes[cid] = manifest.nbytes

    with runtime.borrowed_bundle(cfg, clock) as bundle:
        probes = eval_sets(cfg).probe

        def probe(cid: str, upd: ClientUpdate) -> ClientStats:
            families = sorted({e.family for e in client_data(cfg, cid).val})
            return probe_stats(bundle, global_adapter, upd, families, probes, cfg)

        use_probe = cfg.aggregation.gain_source == "server_probe"
        outcome = aggregate_round(
            global_adapter, updates, failures, state, cfg, round_idx, sizes, probe if use_probe else None
        )

    key = exchange.write_global(
        store, ident, round_idx, outcome.adapter, outcome.accepted, cfg.aggregation.strategy
    )
    table = {
        "round": round_idx,
        "global_key": key,
        "state_key": layout.state_key(ident.prefix, ident.experiment, round_idx),
        "rows": [r.model_dump() for r in outcome.rows],
    }
    exchange.write_round_table(store, ident, round_idx, table)
    # The state, written last, is the round's commit marker.
    exchange.write_state(store, ident, outcome.state.model_copy(update={"global_key": key}))
    return {**table, "timings": clock.result()}


@task(name="last-committed-round", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
def last_committed_round_task(cfg: ExperimentConfig) -> int:
    """The last round whose state is committed (0 right after initialisation)."""
    last = exchange.last_committed_round(make_store(cfg.store), exchange.identity(cfg))
    return 0 if last is None else last
