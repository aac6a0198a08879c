"""One federated round: clients in parallel, then aggregate, evaluate, log, register, report."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import QuorumError
from fgrpo_io.reports import failed_round_markdown, round_markdown
from fgrpo_io.timing import Timings, add, fit_to_wall
from tasks.aggregate import aggregate_task, last_committed_round_task
from tasks.evaluate_global import evaluate_task
from tasks.log import log_round_task
from tasks.register import register_task
from tasks.report import write_report_task
from tasks.train import train_client_task


def _round_run_name() -> str:
    params = flow_run.parameters
    return f"{params['cfg'].name}-round-{params['round_idx']:04d}"


def _artifact_key(cfg: ExperimentConfig, round_idx: int) -> str:
    return f"{cfg.name.lower().replace('_', '-').replace('.', '-')}-round-{round_idx:04d}"


def _fan_out_embedded(
    cfg: ExperimentConfig, round_idx: int
) -> tuple[list[str], dict[str, str], list[Timings]]:
    """Submit every client task; late or failed clients are recorded, never averaged (SPEC §5).

    Returns (delivered client ids, {failed client id: reason}, the delivered tasks' timings).
    """
    started = time.monotonic()
    futures = {c.id: train_client_task.submit(cfg, c.id, round_idx) for c in cfg.clients}
    delivered: list[str] = []
    failed: dict[str, str] = {}
    timings: list[Timings] = []
    for client_id, future in futures.items():
        remaining = max(0.0, cfg.federation.round_timeout_s - (time.monotonic() - started))
        future.wait(timeout=remaining)
        state = future.state
        if state.is_completed():
            delivered.append(client_id)
            timings.append(future.result()["timings"])
        elif state.is_final():
            failed[client_id] = f"client failed: {state.message or state.name}"
        else:
            failed[client_id] = f"no delta within round_timeout_s={cfg.federation.round_timeout_s:g}"
    return delivered, failed, timings


@flow(name="federated-round", flow_run_name=_round_run_name, validate_parameters=False)
def federated_round(cfg: ExperimentConfig, round_idx: int, parent_run_id: str | None) -> dict[str, Any]:
    """Run round t: every client trains from theta_{t-1}; the coordinator commits theta_t.

    The report's ``timings`` add up the parts its tasks measured (fgrpo_io/timing.py).
    """
    fan_out_started = time.perf_counter()
    delivered: list[str]
    failed: dict[str, str]
    parts: list[Timings]
    if last_committed_round_task(cfg) >= round_idx:
        # Resumed after this round's commit (its report was not written): finish it, train nothing.
        delivered, failed, parts = [], {}, []
    elif cfg.federation.mode == "distributed":
        # Each owner's worker runs its client deployment; only keys and scalars come back.
        from flows.distributed import fan_out

        delivered, failed = fan_out(cfg, round_idx)
        # The owners train on their own machines: the coordinator's wait counts as training.
        parts = [{"train_s": time.perf_counter() - fan_out_started}]
    else:
        delivered, failed, client_timings = _fan_out_embedded(cfg, round_idx)
        parts = [fit_to_wall(add(client_timings), time.perf_counter() - fan_out_started)]

    try:
        aggregated = aggregate_task(cfg, round_idx, delivered, failed)
    except QuorumError as err:
        # Nothing was written: the previous global adapter stays. Say so where people look.
        create_markdown_artifact(
            markdown=failed_round_markdown(cfg.name, round_idx, str(err)),
            key=_artifact_key(cfg, round_idx),
            description=f"{cfg.name} round {round_idx}: not committed (quorum)",
        )
        raise
    parts.append(aggregated.pop("timings"))
    evaluation = evaluate_task(cfg, round_idx)
    parts.append(evaluation.pop("timings"))
    report: dict[str, Any] = {"round": round_idx, **aggregated, "evaluation": evaluation}
    if parent_run_id is not None:
        logged = log_round_task(cfg, parent_run_id, round_idx, aggregated["rows"], evaluation)
        parts.append(logged["timings"])
        report["mlflow_round_run_id"] = logged["round_run_id"]
        registry = register_task(cfg, logged["round_run_id"], round_idx, evaluation["macro_accuracy"])
        parts.append(registry.pop("timings"))
        report["registry"] = registry
    report["timings"] = add(parts)
    report["report_key"] = write_report_task(cfg, round_idx, report)
    create_markdown_artifact(
        markdown=round_markdown(cfg.name, round_idx, aggregated["rows"], evaluation),
        key=_artifact_key(cfg, round_idx),
        description=f"{cfg.name} round {round_idx}: per-client gains and weights",
    )
    return report
