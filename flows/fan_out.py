"""A round's fan-out to the owners: client tasks in the coordinator's process, or warm owner runs.

Late or failed owners are recorded with their reason, never averaged (SPEC §5). The deltas
travel through the store; what comes back is who delivered.
"""

from __future__ import annotations

import time

from fgrpo_core.config import ExperimentConfig
from fgrpo_io import timing
from flows.owner_sessions import OwnerSession, gather, serving_owners
from tasks.train import train_client_task


def _embedded(cfg: ExperimentConfig, round_idx: int) -> tuple[list[str], dict[str, str]]:
    started = time.monotonic()
    # The client tasks run in parallel threads (max_parallel_clients): scale their time to the wall.
    with timing.concurrent():
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


def run_owners(
    cfg: ExperimentConfig, round_idx: int, owners: OwnerSession | None = None
) -> tuple[list[str], dict[str, str]]:
    """(owners that delivered, {owner that did not: why}) for round ``round_idx``.

    Distributed, the round waits for the experiment's warm owner runs (``owners``); a round run
    on its own gets a session of its own, for this round only.
    """
    if cfg.federation.mode == "embedded" and cfg.federation.owner_processes == 0:
        return _embedded(cfg, round_idx)
    started = time.perf_counter()
    if cfg.federation.mode == "embedded":
        # Owner worker processes time their tasks in their own processes: the wait is the training.
        outcome = _embedded(cfg, round_idx)
    elif owners is not None:
        outcome = gather(cfg, owners, round_idx)
    else:
        with serving_owners(cfg, round_idx, round_idx) as session:
            outcome = gather(cfg, session, round_idx)
    # The owners train on their own machines: the coordinator's wait counts as training.
    timing.record("train_s", time.perf_counter() - started)
    return outcome
