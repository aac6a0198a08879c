"""Owners in worker processes: a local Dask cluster that lives for a whole embedded experiment.

With ``federation.owner_processes: N`` the round's client tasks run through Prefect's
DaskTaskRunner on N worker processes (one thread each), so each owner trains alone in its process
(TRL seeds the process-wide RNG: runs stay reproducible) and each process loads the base model
once for the experiment (``runtime.borrowed_bundle`` keeps it). The coordinator's own tasks
(aggregation, evaluation, commit) stay in its process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fgrpo_core.config import ExperimentConfig
from fgrpo_io.environment import child_env


def torch_threads(processes: int) -> int:
    """Intra-op threads per worker: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // processes)


@contextmanager
def owner_cluster(cfg: ExperimentConfig) -> Iterator[str | None]:
    """The scheduler address of the experiment's cluster; None when owners train in-process."""
    n = cfg.federation.owner_processes
    if cfg.federation.mode != "embedded" or n == 0:
        yield None
        return
    from distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)  # its start/stop lines are noise here
    threads = str(torch_threads(n))
    # Set before torch loads in each worker (environment.py's defaults, plus the thread count).
    env = child_env({}, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.WARNING,
        env=env,
    )
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()


def round_task_runner(cfg: ExperimentConfig, address: str | None) -> Any:
    """The task runner of a round flow: Dask on the experiment's cluster, else threads."""
    if address is not None:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=cfg.federation.max_parallel_clients)  # type: ignore[arg-type]
