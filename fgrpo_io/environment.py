"""Environment defaults of every process the project starts: one table, applied before imports.

Applied with ``setdefault`` (a user's value wins) by the CLI, the test suite, the benchmarks and,
through ``child_env``, every server, worker and flow-run process that ``fgrpo stack`` starts.
Nothing here imports torch, Prefect or MLflow: the values must be in place before they load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

DEFAULTS: dict[str, str] = {
    # Offline: nothing downloads weights or data sets at run time.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    # No telemetry ("database is locked" noise in Prefect's ephemeral mode, too).
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # OpenMP threads that busy-wait make torch many times slower whenever the cores are shared
    # (Prefect's API subprocess, other owners, other jobs): sleep instead. Read when torch loads.
    "OMP_WAIT_POLICY": "PASSIVE",
    # Prefect gives its embedded API server 20 s to start (a fresh PREFECT_HOME migrates its
    # database first); a loaded 2-core machine has needed more (a CI run failed on it).
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Resuming is the ledger's job, and no task persists its result, so Prefect's default cache
    # policy only costs a hash of the inputs and the task's source per task run (about 45 a tiny
    # experiment). Read when a task is decorated, hence here and not in prefect_settings.flow_settings.
    "PREFECT_TASKS_DEFAULT_NO_CACHE": "true",
}


def apply_defaults(env: MutableMapping[str, str] | None = None) -> None:
    """Set every default that ``env`` (default: this process's environment) does not set yet."""
    target = os.environ if env is None else env
    for name, value in DEFAULTS.items():
        target.setdefault(name, value)


def child_env(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The environment of a process this project starts: ``base``, the defaults, then ``extra``."""
    env = dict(base)
    apply_defaults(env)
    env.update(extra)
    return env
