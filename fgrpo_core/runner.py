"""The bare federated loop in one process: no orchestrator, no store, no tracker.

Tests use it as the reference computation and the overhead benchmark as the baseline. Deltas go
through the same encode/decode as the pipeline's uploads (``federation.delta_dtype``) so both
paths aggregate identical numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.deltas import decode, encode
from fgrpo_core.downlink import encoded_step
from fgrpo_core.federation import (
    ClientUpdate,
    aggregate_round,
    client_update,
    evaluate_families,
    server_probe,
)
from fgrpo_core.models import get_adapter, load_bundle
from fgrpo_core.partition import eval_sets
from fgrpo_core.types import Adapter, GlobalEval, RoundRow, ServerState

# (round, client id, step, max steps, latest reward)
RunnerProgress = Callable[[int, str, int, int, float], None]


@dataclass
class RoundRecord:
    """What one committed round produced (scalars only)."""

    round: int
    rows: list[RoundRow]
    evaluation: GlobalEval
    wall_time_s: float


@dataclass
class ExperimentResult:
    """A whole in-process experiment."""

    initial_evaluation: GlobalEval
    rounds: list[RoundRecord]
    final_adapter: Adapter
    state: ServerState
    wall_time_s: float
    timings: dict[str, float] = field(default_factory=dict)


def transport(delta: Adapter, cfg: ExperimentConfig) -> tuple[Adapter, int]:
    """Encode and decode a delta as an upload would; returns the decoded delta and its bytes."""
    payload = encode(delta, cfg.federation.delta_dtype)
    decoded, _ = decode(payload)
    return decoded, len(payload)


def run_in_process(
    cfg: ExperimentConfig,
    work_dir: str | Path,
    progress: RunnerProgress | None = None,
) -> ExperimentResult:
    """Run ``cfg.federation.rounds`` rounds with every client in this process, in config order."""
    started = time.perf_counter()
    timings = {"train_s": 0.0, "aggregate_s": 0.0, "evaluate_s": 0.0}
    bundle = load_bundle(cfg)
    global_adapter = get_adapter(bundle.model)
    state = ServerState()
    sets = eval_sets(cfg)

    t0 = time.perf_counter()
    initial = evaluate_families(bundle, global_adapter, sets.eval, cfg)
    timings["evaluate_s"] += time.perf_counter() - t0

    records: list[RoundRecord] = []
    for round_idx in range(1, cfg.federation.rounds + 1):
        round_started = time.perf_counter()
        updates: dict[str, ClientUpdate] = {}
        sizes: dict[str, int] = {}
        for spec in cfg.clients:

            def report(
                step: int, total: int, reward: float, _cid: str = spec.id, _r: int = round_idx
            ) -> None:
                if progress is not None:
                    progress(_r, _cid, step, total, reward)

            t0 = time.perf_counter()
            update = client_update(bundle, global_adapter, cfg, spec.id, round_idx, work_dir, report)
            timings["train_s"] += time.perf_counter() - t0
            delta, sizes[spec.id] = transport(update.delta, cfg)
            updates[spec.id] = ClientUpdate(delta=delta, stats=update.stats)

        t0 = time.perf_counter()
        outcome = aggregate_round(
            global_adapter,
            updates,
            {},
            state,
            cfg,
            round_idx,
            sizes,
            server_probe(bundle, global_adapter, cfg),
        )
        timings["aggregate_s"] += time.perf_counter() - t0
        new_global = outcome.adapter
        if cfg.federation.delta_dtype != "float32":
            # As the pipeline defines theta_t: the decoded value of the step owners download.
            new_global, _ = encoded_step(global_adapter, outcome.adapter, cfg.federation.delta_dtype)
        global_adapter, state = new_global, outcome.state

        t0 = time.perf_counter()
        evaluation = evaluate_families(bundle, global_adapter, sets.eval, cfg)
        timings["evaluate_s"] += time.perf_counter() - t0
        records.append(RoundRecord(round_idx, outcome.rows, evaluation, time.perf_counter() - round_started))

    return ExperimentResult(
        initial_evaluation=initial,
        rounds=records,
        final_adapter=global_adapter,
        state=state,
        wall_time_s=time.perf_counter() - started,
        timings=timings,
    )
