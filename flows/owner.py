"""One data owner's rounds of an experiment, run by the owner's own Prefect worker (distributed mode).

The coordinator starts this flow once per experiment through the deployment
``fgrpo-client/<owner>`` and passes only the client id, the experiment's name, its owner-session
id and the rounds to serve. The run loads the base model once and then, round after round, waits
in the store for theta_{t-1}, trains (one task run per round: its own state, logs and retries)
and uploads its delta; it exits after the last round or at the coordinator's stop marker. A round
the coordinator closes (its deadline passed) while this owner trains it stops at the next training
step after the marker appears (checked at most once a second): its task run ends Cancelled,
nothing is uploaded, the session report lists it under ``cancelled`` (no failure: the coordinator
recorded the owner as late), and the next round starts on time. The experiment config is read
here, on the owner's machine (``FGRPO_OWNER_CONFIG``): it alone holds the owner's ``data_path``,
and the owner's prompts never leave it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow
from prefect.runtime import flow_run

from fgrpo_core.config import ExperimentConfig, load_config, parse_config
from fgrpo_core.errors import ConfigError, OwnerError
from fgrpo_core.owner_failure import OwnerFailure, from_error

if TYPE_CHECKING:
    from fgrpo_io.rendezvous import SessionReport

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
    rounds = f"{params['first_round']:04d}-{params['last_round']:04d}"
    return f"{params['experiment']}-{params['client_id']}-rounds-{rounds}"


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
def owner_rounds(
    client_id: str,
    experiment: str,
    session: str,
    first_round: int,
    last_round: int,
    experiment_config: str | None = None,
) -> SessionReport:
    """Serve rounds ``first_round``..``last_round`` for ``client_id`` from one warm process.

    ``experiment_config`` names a file in the owner's config folder; by default ``$FGRPO_OWNER_CONFIG``.
    An owner whose data, reward or model cannot run records a permanent failure (kind and what to
    fix) for the coordinator, and the run fails with OwnerError; nothing retries it.
    """
    cfg = owner_config(client_id, experiment, experiment_config)
    # Imported here: deploying this flow loads this file to read its parameters, and the
    # coordinator's machine should not need torch for that.
    from fgrpo_io import runtime
    from fgrpo_io.rendezvous import SessionReport
    from tasks.owner import report_failure_task, report_session_task, wait_round_task
    from tasks.owner_check import check_owner_task, record_failure_task
    from tasks.train import train_client_task

    report = SessionReport(client_id=client_id, session=session, flow_run_id=str(flow_run.id))
    # Pre-flight once (model, data, reward), while the coordinator initialises: it loads the model
    # into this process's pool (every round borrows it), and a permanent failure is recorded for
    # every round this run serves.
    permanent: OwnerFailure | None = check_owner_task(cfg, client_id, first_round)
    for t in range(first_round, last_round + 1):
        readiness = wait_round_task(cfg, client_id, session, t)
        if readiness == "stopped":
            report.stopped = True
            break
        if readiness == "closed":  # the coordinator's deadline passed before this owner began
            report.skipped.append(t)
            continue
        if permanent is None:
            state = train_client_task(cfg, client_id, t, session, return_state=True)
            if state.is_completed():
                report.trained.append(t)
                continue
            if state.is_cancelled():  # closed (or stopped) mid-training: the coordinator recorded it
                report.cancelled.append(t)
                continue
            error = state.result(raise_on_failure=False)
            permanent = from_error(client_id, t, error) if isinstance(error, BaseException) else None
            reason = f"{state.name}: {state.message or 'no message'}"
        # One record of the round's failure, and the coordinator stops waiting for this owner.
        if permanent is not None:
            failure = permanent.model_copy(update={"round": t})
            record_failure_task(cfg, failure)  # the row's reason: `permanent: kind: what to fix`
            reason = failure.reason
        else:
            report_failure_task(cfg, client_id, t, reason)
        report.failed[t] = reason  # this owner's round only: the next round starts afresh
    report.model_loads = runtime.model_loads()
    report_session_task(cfg, report)
    if permanent is not None:  # nothing retries it: the run fails with what to fix
        raise OwnerError(permanent.kind, permanent.reason)
    return report
