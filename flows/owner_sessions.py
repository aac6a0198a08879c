"""Distributed mode: each data owner serves an experiment's rounds from one warm flow run in its pool.

At experiment start the coordinator starts every owner's deployment ``fgrpo-client/<owner>``
once (an *owner session*); each run loads the base model once and serves every round (see
flows/owner.py). A round then only waits in the store: for each owner's manifest, its failure
note, or the end of its run, up to ``federation.round_timeout_s``; then it writes the round's
closed marker, so a late owner skips the round instead of training for nothing, and one still
training it stops at its next step and uploads nothing (flows/owner.py). At the end, or
when the experiment fails, the stop marker ends the runs; one still going after a grace period
is cancelled. The deltas travel through the store, never through Prefect.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import arun_deployment
from prefect.logging import get_logger
from prefect.states import Cancelling
from pydantic import BaseModel, ConfigDict, Field

from fgrpo_core.config import ExperimentConfig
from fgrpo_io import exchange, rendezvous
from fgrpo_io.store import make_store

CLIENT_FLOW_NAME = "fgrpo-client"
# How long the end of an experiment waits for owner runs to exit by themselves before cancelling.
STOP_GRACE_S = {"finished": 30.0, "failed": 5.0}

T = TypeVar("T")
logger = get_logger("fgrpo.distributed")


def deployment_name(client_id: str) -> str:
    """The deployment that runs owner ``client_id``'s client flow."""
    return f"{CLIENT_FLOW_NAME}/{client_id}"


def work_pool_name(client_id: str) -> str:
    """The work pool served by owner ``client_id``'s worker."""
    return f"owner-{client_id}"


class OwnerSession(BaseModel):
    """The warm owner runs of one experiment invocation, as the round flow needs them."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Names the session's markers in the store (global/control/<id>/).")
    first_round: int = Field(ge=1, description="The first round the owner runs serve.")
    last_round: int = Field(ge=1, description="The last round they serve; they exit after it.")
    runs: dict[str, str] = Field(description="Owner id -> the id of its Prefect flow run.")
    unstarted: dict[str, str] = Field(description="Owner id -> why its run could not be created.")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Keep the caller's Prefect context (the experiment flow) so the owner runs are its subflows.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, asyncio.run, coro).result()


def start_owners(cfg: ExperimentConfig, first_round: int, last_round: int) -> OwnerSession:
    """Create every owner's flow run for rounds ``first_round``..``last_round``; wait for none."""
    session = uuid.uuid4().hex

    async def create() -> list[FlowRun | BaseException]:
        runs = [
            arun_deployment(
                deployment_name(spec.id),
                parameters={
                    "client_id": spec.id,
                    "experiment": cfg.name,
                    "session": session,
                    "first_round": first_round,
                    "last_round": last_round,
                },
                timeout=0,  # returns once the run is scheduled
                tags=[f"experiment:{cfg.name}", f"session:{session}"],
            )
            for spec in cfg.clients
        ]
        return await asyncio.gather(*runs, return_exceptions=True)

    runs: dict[str, str] = {}
    unstarted: dict[str, str] = {}
    for spec, result in zip(cfg.clients, _run(create()), strict=True):
        if isinstance(result, BaseException):
            # E.g. no deployment for this owner: `fgrpo stack up` or `prefect deploy` was not run.
            unstarted[spec.id] = (
                f"could not start {deployment_name(spec.id)}: {type(result).__name__}: {result}"
            )
        else:
            runs[spec.id] = str(result.id)
    logger.info("owner session %s: %d runs for rounds %d-%d", session, len(runs), first_round, last_round)
    return OwnerSession(
        id=session, first_round=first_round, last_round=last_round, runs=runs, unstarted=unstarted
    )


def _read_runs(ids: list[str]) -> list[FlowRun]:
    if not ids:
        return []
    with get_client(sync_client=True) as client:
        found = FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(i) for i in ids]))
        return client.read_flow_runs(flow_run_filter=found)


def _ended(session: OwnerSession, pending: list[str], t: int) -> dict[str, str]:
    """{owner: why} for the pending owners whose run has ended (or never started)."""
    gone = {c: session.unstarted[c] for c in pending if c in session.unstarted}
    by_id = {session.runs[c]: c for c in pending if c in session.runs}
    for run in _read_runs(list(by_id)):
        state = run.state
        if state is not None and state.is_final():
            gone[by_id[str(run.id)]] = (
                f"client flow run {run.name} ended {state.name} before delivering round {t}: "
                f"{state.message or 'no message'}"
            )
    return gone


def gather(cfg: ExperimentConfig, session: OwnerSession, t: int) -> tuple[list[str], dict[str, str]]:
    """(delivered owners, {failed owner: why}) of round t; then round t is closed to the owners."""
    store, ident = make_store(cfg.store), exchange.identity(cfg)
    started = time.monotonic()
    owners = [c.id for c in cfg.clients]
    timeout_s = cfg.federation.round_timeout_s
    delivered, failed = rendezvous.wait_deliveries(
        store, ident, t, owners, timeout_s, lambda pending: _ended(session, pending, t)
    )
    rendezvous.close_round(store, ident, session.id, t)
    logger.info(
        "round %d: %d delivered, %d failed in %.1f s",
        t,
        len(delivered),
        len(failed),
        time.monotonic() - started,
    )
    return delivered, failed


def stop_owners(cfg: ExperimentConfig, session: OwnerSession, outcome: str) -> None:
    """Write the stop marker; cancel the runs still going after the grace period of ``outcome``."""
    store, ident = make_store(cfg.store), exchange.identity(cfg)
    rendezvous.stop(store, ident, session.id, f"experiment {outcome}")
    deadline = time.monotonic() + STOP_GRACE_S[outcome]
    going = list(session.runs.values())
    while going:
        going = [str(r.id) for r in _read_runs(going) if r.state is None or not r.state.is_final()]
        if not going or time.monotonic() > deadline:
            break
        time.sleep(rendezvous.RUN_STATE_POLL_S)
    if going:
        logger.warning("owner session %s: cancelling %d runs that did not stop", session.id, len(going))
        with get_client(sync_client=True) as client:
            for run_id in going:
                cancel: State[Any] = Cancelling(message=f"experiment {outcome}; the run did not stop")
                client.set_flow_run_state(uuid.UUID(run_id), cancel, force=True)


@contextmanager
def serving_owners(cfg: ExperimentConfig, first_round: int, last_round: int) -> Iterator[OwnerSession]:
    """An owner session for these rounds, stopped when the block ends however it ends."""
    session = start_owners(cfg, first_round, last_round)
    outcome = "failed"
    try:
        yield session
        outcome = "finished"
    finally:
        stop_owners(cfg, session, outcome)


def owners_for(cfg: ExperimentConfig, first_round: int, last_round: int) -> Any:
    """The experiment's owner session (a context manager); None when embedded or nothing is left."""
    if cfg.federation.mode != "distributed" or first_round > last_round:
        return nullcontext(None)
    return serving_owners(cfg, first_round, last_round)
