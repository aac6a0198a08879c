"""Each owner's side of the local stack: a work pool whose job template is pinned, a deployment, a worker.

The pool's base job template has no `command`, `env` or `working_dir` at all, and its variables
schema forbids every key it does not list: a flow run created from a deployment with such an
override is refused by the Prefect server (422), and what reaches the worker by a route the
server does not check (see `pinned_job_template`) has nothing to fill.
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

from fgrpo_app.processes import READY_TIMEOUT_S, Component, StackError, is_alive, spawn, tail
from fgrpo_app.stack_servers import Servers, base_env, write_env_file
from fgrpo_core.config import ExperimentConfig
from fgrpo_io.store import ENDPOINT_ENV

REPO_DIR = Path(__file__).resolve().parents[1]
# Job variables nobody may set through a deployment or a flow run.
PINNED_VARIABLES = ("command", "env", "working_dir")


def pinned_job_template() -> dict[str, Any]:
    """The process worker's default base job template without `command`, `env` and `working_dir`.

    Removed from `job_configuration`, not fixed to values there: Prefect 3.9's worker merges any
    `env` job variable into a dict-valued `env` even when the schema does not allow the key, and
    the server checks job variables against the schema only when a flow run is created from a
    deployment (not on PATCH /deployments/{id} nor POST /flow_runs/). So the worker's defaults
    apply: its own `python -m prefect.engine`, its own environment (the owner's device is
    `FGRPO_DEVICE` there), a fresh temporary folder.
    """
    from prefect.workers.process import ProcessWorker

    template = copy.deepcopy(ProcessWorker.get_default_base_job_template())
    for name in PINNED_VARIABLES:
        del template["job_configuration"][name]
        del template["variables"]["properties"][name]
    template["variables"]["additionalProperties"] = False  # an unknown job variable is a 422
    return template


def prefect_settings(servers: Servers) -> Any:
    """This process's Prefect client settings for the stack's API (URL and basic auth)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: servers.env["PREFECT_API_URL"], PREFECT_API_AUTH_STRING: servers.auth_string}
    return temporary_settings(updates=updates)


def deploy_clients(servers: Servers, cfg: ExperimentConfig) -> None:
    """Create each owner's pinned process work pool and its `fgrpo-client/<owner>` deployment."""
    from prefect import Flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.owner_sessions import work_pool_name

    async def create_pools() -> None:
        template = pinned_job_template()
        async with get_client() as client:
            for spec in cfg.clients:
                pool = WorkPoolCreate(
                    name=work_pool_name(spec.id), type="process", base_job_template=template
                )
                # overwrite: a pool left by an earlier stack on the same data gets the pinned template.
                await client.create_work_pool(work_pool=pool, overwrite=True)

    with prefect_settings(servers):
        asyncio.run(create_pools())
        for spec in cfg.clients:
            client_flow: Any = Flow.from_source(
                source=str(REPO_DIR), entrypoint="flows/owner.py:owner_rounds"
            )
            client_flow.deploy(
                name=spec.id,
                work_pool_name=work_pool_name(spec.id),
                tags=["fgrpo", f"owner:{spec.id}"],
                build=False,
                push=False,
                print_next_steps=False,
                ignore_warnings=True,
            )


def start_worker(
    owner: str, servers: Servers, owner_config: Path, cfg: ExperimentConfig, stack_dir: Path
) -> Component:
    """One owner's worker: only its own credentials, config and Prefect home."""
    from flows.owner import DEVICE_ENV, OWNER_CONFIG_ENV, OWNER_ID_ENV
    from flows.owner_sessions import work_pool_name

    home = stack_dir / "workers" / owner
    home.mkdir(parents=True, exist_ok=True)
    key = servers.keys[owner]
    python_path = os.pathsep.join(p for p in (str(REPO_DIR), os.environ.get("PYTHONPATH", "")) if p)
    write_env_file(
        stack_dir / "credentials" / f"{owner}.env",
        {"AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1]},
    )
    worker_env = {
        **base_env(),
        "PREFECT_API_URL": servers.env["PREFECT_API_URL"],
        "PREFECT_API_AUTH_STRING": servers.auth_string,
        "PREFECT_HOME": str(home),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        ENDPOINT_ENV: servers.env[ENDPOINT_ENV],
        "AWS_ACCESS_KEY_ID": key[0],
        "AWS_SECRET_ACCESS_KEY": key[1],
        "AWS_DEFAULT_REGION": cfg.store.region,
        OWNER_CONFIG_ENV: str(owner_config),
        OWNER_ID_ENV: owner,
        DEVICE_ENV: cfg.grpo.device,  # the worker's env reaches its flow runs; a job variable cannot
        "PYTHONPATH": python_path,
    }
    pool = work_pool_name(owner)
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    cmd += ["--name", f"{pool}-worker"]
    return spawn(f"worker-{owner}", cmd, worker_env, stack_dir, servers.env["PREFECT_API_URL"])


def wait_workers(servers: Servers, cfg: ExperimentConfig, workers: list[Component]) -> None:
    """Until every owner's worker has registered with its pool (or exited: then its log tail)."""
    from prefect.client.orchestration import get_client

    from flows.owner_sessions import work_pool_name

    async def wait() -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with get_client() as client:
            for spec, comp in zip(cfg.clients, workers, strict=True):
                while not await client.read_workers_for_work_pool(work_pool_name(spec.id)):
                    if not is_alive(comp):
                        raise StackError(f"{comp.name} exited; see {comp.log}:\n{tail(comp.log)}")
                    if time.monotonic() > deadline:
                        raise StackError(f"{comp.name} did not register with its pool; see {comp.log}")
                    await asyncio.sleep(0.5)

    with prefect_settings(servers):
        asyncio.run(wait())
