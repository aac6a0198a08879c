"""One data owner's round, run by the owner's own Prefect worker (distributed mode).

The coordinator starts this flow through the deployment ``fgrpo-client/<owner>`` and passes only
the client id, the round and the experiment's name. The experiment config is read here, on the
owner's machine (``FGRPO_OWNER_CONFIG``): it alone holds the owner's ``data_path``, and the
owner's prompts never leave it. What goes back is a manifest key and scalar stats.
"""

from __future__ import annotations

import os

from prefect import flow
from prefect.runtime import flow_run

from fgrpo_core.config import ExperimentConfig, load_config, parse_config
from fgrpo_core.errors import ConfigError
from fgrpo_core.manifest import ClientManifest

OWNER_CONFIG_ENV = "FGRPO_OWNER_CONFIG"
# Set in a worker's environment: the one owner whose data this machine holds.
OWNER_ID_ENV = "FGRPO_CLIENT_ID"
# Set through the deployment's job variables: "cpu" or "cuda" on this owner's machine.
DEVICE_ENV = "FGRPO_DEVICE"


def _client_run_name() -> str:
    params = flow_run.parameters
    return f"{params['experiment']}-{params['client_id']}-round-{params['round_idx']:04d}"


def owner_config(client_id: str, experiment: str, experiment_config: str | None = None) -> ExperimentConfig:
    """The owner's copy of the experiment config, checked against what the coordinator asked."""
    path = experiment_config or os.environ.get(OWNER_CONFIG_ENV)
    if not path:
        raise ConfigError(
            f"no experiment config on this owner's machine: set {OWNER_CONFIG_ENV} in the "
            "worker's environment (or pass the flow parameter experiment_config)"
        )
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

    ``experiment_config`` is a path on the owner's machine; by default ``$FGRPO_OWNER_CONFIG``.
    """
    cfg = owner_config(client_id, experiment, experiment_config)
    # Imported here: deploying this flow loads this file to read its parameters, and the
    # coordinator's machine should not need torch for that.
    from tasks.train import train_client_task

    return train_client_task(cfg, client_id, round_idx)
