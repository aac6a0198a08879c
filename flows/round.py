"""One federated round: clients in parallel, then aggregate, evaluate, log, register, report."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from fgrpo.reports import round_markdown
from fgrpo_core.config import ExperimentConfig
from tasks.aggregate import aggregate_task
from tasks.client import train_client_task
from tasks.evaluate import evaluate_task
from tasks.registry import register_task
from tasks.report import write_report_task
from tasks.tracking import log_round_task


def _round_run_name() -> str:
    params = flow_run.parameters
    return f"{params['cfg'].name}-round-{params['round_idx']:04d}"


def _fan_out_embedded(cfg: ExperimentConfig, round_idx: int) -> tuple[list[str], dict[str, str]]:
    """Submit every client task; late or failed clients are recorded, never averaged (SPEC §5)."""
    started = time.monotonic()
    futures = {c.id: train_client_task.submit(cfg, c.id, round_idx) for c in cfg.clients}
    delivered: list[str] = []
    failed: dict[str, str] = {}
    for client_id, future in futures.items():
        remaining = max(0.0, cfg.federation.round_timeout_s - (time.monotonic() - started))
        future.wait(timeout=remaining)
        state = future.state
        if state.is_completed():
            delivered.append(client_id)
        elif state.is_final():
            failed[client_id] = f"client failed: {state.message or state.name}"
        else:
            failed[client_id] = f"no delta within round_timeout_s={cfg.federation.round_timeout_s:g}"
    return delivered, failed


@flow(name="federated-round", flow_run_name=_round_run_name, validate_parameters=False)
def federated_round(cfg: ExperimentConfig, round_idx: int, parent_run_id: str | None) -> dict[str, Any]:
    """Run round t: every client trains from theta_{t-1}; the coordinator commits theta_t."""
    if cfg.federation.mode == "distributed":
        # Each owner's worker runs its client deployment; only keys and scalars come back.
        from flows.distributed import fan_out

        delivered, failed = fan_out(cfg, round_idx)
    else:
        delivered, failed = _fan_out_embedded(cfg, round_idx)

    aggregated = aggregate_task(cfg, round_idx, delivered, failed)
    evaluation = evaluate_task(cfg, round_idx)
    report: dict[str, Any] = {"round": round_idx, **aggregated, "evaluation": evaluation}
    if parent_run_id is not None:
        round_run_id = log_round_task(cfg, parent_run_id, round_idx, aggregated["rows"], evaluation)
        report["mlflow_round_run_id"] = round_run_id
        report["registry"] = register_task(cfg, round_run_id, round_idx, evaluation["macro_accuracy"])
    report["report_key"] = write_report_task(cfg, round_idx, report)
    create_markdown_artifact(
        markdown=round_markdown(cfg.name, round_idx, aggregated["rows"], evaluation),
        key=f"{cfg.name.lower().replace('_', '-').replace('.', '-')}-round-{round_idx:04d}",
        description=f"{cfg.name} round {round_idx}: per-client gains and weights",
    )
    return report
