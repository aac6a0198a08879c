"""Distributed mode: each data owner's client flow runs as a deployment in the owner's work pool.

The round flow calls ``fan_out`` instead of submitting the client tasks itself. Every owner's
deployment ``fgrpo-client/<owner>`` is started at once; each run's final state decides whether
the owner delivered. The deltas themselves travel through the store, never through Prefect.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import arun_deployment
from prefect.logging import get_logger
from prefect.states import Cancelling

from fgrpo_core.config import ExperimentConfig

CLIENT_FLOW_NAME = "fgrpo-client"
# How often a waiting coordinator asks the API for each run's state.
POLL_INTERVAL_S = 1.0

T = TypeVar("T")
logger = get_logger("fgrpo.distributed")


def deployment_name(client_id: str) -> str:
    """The deployment that runs owner ``client_id``'s client flow."""
    return f"{CLIENT_FLOW_NAME}/{client_id}"


def work_pool_name(client_id: str) -> str:
    """The work pool served by owner ``client_id``'s worker."""
    return f"owner-{client_id}"


def _outcome(run: FlowRun, timeout_s: float) -> str | None:
    """None when the run completed, else why this owner delivered nothing."""
    state = run.state
    if state is not None and state.is_completed():
        return None
    if state is None or not state.is_final():
        where = state.name if state is not None else "no state"
        return f"no delta within round_timeout_s={timeout_s:g} (flow run {run.name} still {where})"
    return f"client flow run {run.name} ended {state.name}: {state.message or 'no message'}"


async def _cancel(run: FlowRun) -> None:
    # A late owner stops training (and frees its GPU); its upload would be ignored anyway.
    async with get_client() as client:
        await client.set_flow_run_state(run.id, Cancelling(message="round timed out"), force=True)


async def _gather(cfg: ExperimentConfig, round_idx: int, timeout_s: float) -> list[FlowRun | BaseException]:
    runs = [
        arun_deployment(
            deployment_name(spec.id),
            parameters={"client_id": spec.id, "round_idx": round_idx, "experiment": cfg.name},
            timeout=timeout_s,
            poll_interval=POLL_INTERVAL_S,
            tags=[f"experiment:{cfg.name}", f"round:{round_idx}"],
        )
        for spec in cfg.clients
    ]
    return await asyncio.gather(*runs, return_exceptions=True)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Keep the caller's Prefect context (the round flow) so the client runs are its subflows.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, asyncio.run, coro).result()


def fan_out(cfg: ExperimentConfig, round_idx: int) -> tuple[list[str], dict[str, str]]:
    """Run every owner's client deployment for round ``round_idx`` concurrently.

    Returns (delivered client ids, {failed client id: reason}). An owner whose run failed,
    crashed, was cancelled or did not finish within ``federation.round_timeout_s`` is failed;
    a run still going at the deadline is cancelled.
    """
    timeout_s = cfg.federation.round_timeout_s
    started = time.monotonic()
    results = _run(_gather(cfg, round_idx, timeout_s))

    delivered: list[str] = []
    failed: dict[str, str] = {}
    late: list[FlowRun] = []
    for spec, result in zip(cfg.clients, results, strict=True):
        if isinstance(result, BaseException):
            # E.g. no deployment for this owner: `fgrpo stack up` or `prefect deploy` was not run.
            failed[spec.id] = f"could not start {deployment_name(spec.id)}: {type(result).__name__}: {result}"
            continue
        reason = _outcome(result, timeout_s)
        if reason is None:
            delivered.append(spec.id)
            continue
        failed[spec.id] = reason
        if result.state is None or not result.state.is_final():
            late.append(result)
    if late:

        async def cancel_all() -> None:
            await asyncio.gather(*(_cancel(run) for run in late), return_exceptions=True)

        _run(cancel_all())
    elapsed = time.monotonic() - started
    logger.info(
        "round %d: %d delivered, %d failed in %.1f s", round_idx, len(delivered), len(failed), elapsed
    )
    return delivered, failed
