"""One data owner's round, run by the owner's own Prefect worker (distributed mode).

The coordinator starts this flow through the deployment ``fgrpo-client/<owner>`` and passes only
the client id, the round and the experiment's name. The experiment config is read here, on the
owner's machine (``FGRPO_OWNER_CONFIG``): it alone holds the owner's ``data_path``, and the
owner's prompts never leave it. What goes back is a manifest key and scalar stats.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from fgrpo_core.config import ExperimentConfig, load_config, parse_config
from fgrpo_core.errors import ConfigError, OwnerError
from fgrpo_core.manifest import ClientManifest
from fgrpo_core.owner_failure import from_error

OWNER_CONFIG_ENV = "FGRPO_OWNER_CONFIG"
# The only folder a flow run's `experiment_config` may name a file in (default: OWNER_CONFIG's).
OWNER_CONFIG_DIR_ENV = "FGRPO_OWNER_CONFIG_DIR"
# Set in a worker's environment: the one owner whose data this machine holds.
OWNER_ID_ENV = "FGRPO_CLIENT_ID"
# "cpu" or "cuda" on this owner's machine: pinned in the owner's work pool template (or set in
# the worker's environment); a flow run cannot override it.
DEVICE_ENV = "FGRPO_DEVICE"


def _client_run_name() -> str:
    params = flow_run.parameters
    return f"{params['experiment']}-{params['client_id']}-round-{params['round_idx']:04d}"


def config_path(experiment_config: str | None) -> Path:
    """The config file to read: `$FGRPO_OWNER_CONFIG`, or a flow run's choice inside the owner's folder.

    `experiment_config` comes from whoever starts the flow run, so it may only pick a file in
    `$FGRPO_OWNER_CONFIG_DIR` (default: the folder of `$FGRPO_OWNER_CONFIG`), never any path.
    """
    default = os.environ.get(OWNER_CONFIG_ENV)
    if experiment_config is None:
        if not default:
            raise ConfigError(
                f"no experiment config on this owner's machine: set {OWNER_CONFIG_ENV} in the "
                "worker's environment (or pass the flow parameter experiment_config)"
            )
        return Path(default)
    folder = os.environ.get(OWNER_CONFIG_DIR_ENV) or (str(Path(default).parent) if default else None)
    if not folder:
        raise ConfigError(
            f"experiment_config={experiment_config!r} refused: this owner configured no config folder "
            f"({OWNER_CONFIG_DIR_ENV} or {OWNER_CONFIG_ENV} in the worker's environment)"
        )
    root = Path(folder).resolve()
    path = (root / experiment_config).resolve()  # an absolute parameter replaces root; checked next
    if not path.is_relative_to(root):
        raise ConfigError(
            f"experiment_config={experiment_config!r} refused: it resolves to {path}, outside this "
            f"owner's config folder {root} ({OWNER_CONFIG_DIR_ENV}); name a file inside it"
        )
    return path


def owner_config(client_id: str, experiment: str, experiment_config: str | None = None) -> ExperimentConfig:
    """The owner's copy of the experiment config, checked against what the coordinator asked."""
    path = config_path(experiment_config)
    cfg = load_config(path)
    if cfg.name != experiment:
        raise ConfigError(
            f"the coordinator asked for experiment {experiment!r}, but {path} configures "
            f"{cfg.name!r}: point {OWNER_CONFIG_ENV} at this experiment's config"
        )
    if client_id not in {c.id for c in cfg.clients}:
        raise ConfigError(f"client {client_id!r} is not among the clients of {path}")
    worker_owner = os.environ.get(OWNER_ID_ENV)
    if worker_owner is not None and worker_owner != client_id:
        # A deployment pointed at the wrong pool must not train another owner on this data.
        raise ConfigError(
            f"this worker serves owner {worker_owner!r} ({OWNER_ID_ENV}); it refuses to train "
            f"{client_id!r}: check the deployment's work pool"
        )
    device = os.environ.get(DEVICE_ENV)
    if device:
        cfg = parse_config({**cfg.model_dump(), "grpo": {**cfg.grpo.model_dump(), "device": device}})
    return cfg


@flow(name="fgrpo-client", flow_run_name=_client_run_name, log_prints=True)
def client_round(
    client_id: str, round_idx: int, experiment: str, experiment_config: str | None = None
) -> ClientManifest:
    """Train ``client_id`` for round ``round_idx`` from theta_{t-1}; upload its delta and manifest.

    ``experiment_config`` names a file in the owner's config folder; by default ``$FGRPO_OWNER_CONFIG``.
    An owner whose data, reward or model cannot run records a permanent failure (kind and what to
    fix) for the coordinator, and the run fails with OwnerError; nothing retries it.
    """
    cfg = owner_config(client_id, experiment, experiment_config)
    # Imported here: deploying this flow loads this file to read its parameters, and the
    # coordinator's machine should not need torch for that.
    from tasks.owner_check import check_owner_task, record_failure_task
    from tasks.train import train_client_task

    failure = check_owner_task(cfg, client_id, round_idx)
    if failure is None:
        try:
            return train_client_task(cfg, client_id, round_idx)
        except Exception as err:
            failure = from_error(client_id, round_idx, err)
            if failure is None:  # not known permanent (I/O, a crash): the generic failure
                raise
    record_failure_task(cfg, failure)
    raise OwnerError(failure.kind, failure.reason)
