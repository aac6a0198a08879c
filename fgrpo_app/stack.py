"""`fgrpo stack up|down|status`: the distributed topology on 127.0.0.1, without Docker.

A Prefect server, an MLflow server and an S3 server (MinIO when a `minio` binary is on PATH,
else moto), one process work pool and one client deployment per data owner, and one worker
process per owner with its own environment and S3 credentials. Everything `up` starts is
recorded (pid files and `stack.json` under the stack folder), so `down` stops exactly those
processes (workers before servers) and keeps the data. Linux: process identity is checked
through /proc so that a reused pid is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fgrpo_app.processes import (
    HOST,
    READY_TIMEOUT_S,
    Component,
    StackError,
    free_port,
    is_alive,
    spawn,
    stop,
    tail,
    wait_http,
)
from fgrpo_app.s3_access import provision_minio, provision_moto
from fgrpo_core.config import ExperimentConfig
from fgrpo_io.environment import child_env
from fgrpo_io.store import ENDPOINT_ENV

REPO_DIR = Path(__file__).resolve().parents[1]
STATE_FILE = "stack.json"
# Inherited variables a worker must not see: the coordinator's credentials and endpoints.
_PRIVATE_PREFIXES = ("AWS_", "PREFECT_", "MLFLOW_", "FGRPO_")


def _base_env() -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
    env = child_env(inherited)
    # Nothing from the operator's own AWS set-up may reach a component.
    env.update(
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _write_env_file(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    os.chmod(path, 0o600)  # secrets: readable by this user only
    path.write_text("".join(f"export {k}={v}\n" for k, v in values.items()))


# --- Prefect: one work pool, deployment and worker per owner ---------------------------------------


def _deploy_clients(api_url: str, cfg: ExperimentConfig) -> None:
    """Create each owner's process work pool and its `fgrpo-client/<owner>` deployment."""
    import asyncio

    from prefect import Flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    from flows.distributed import work_pool_name

    async def create_pools() -> None:
        template = ProcessWorker.get_default_base_job_template()
        async with get_client() as client:
            for spec in cfg.clients:
                pool = WorkPoolCreate(
                    name=work_pool_name(spec.id), type="process", base_job_template=template
                )
                with contextlib.suppress(ObjectAlreadyExists):
                    await client.create_work_pool(work_pool=pool)

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        asyncio.run(create_pools())
        for spec in cfg.clients:
            client_flow: Any = Flow.from_source(
                source=str(REPO_DIR), entrypoint="flows/owner.py:client_round"
            )
            client_flow.deploy(
                name=spec.id,
                work_pool_name=work_pool_name(spec.id),
                job_variables={"env": {"FGRPO_DEVICE": cfg.grpo.device}},
                tags=["fgrpo", f"owner:{spec.id}"],
                build=False,
                push=False,
                print_next_steps=False,
                ignore_warnings=True,
            )


def _wait_workers(api_url: str, cfg: ExperimentConfig, workers: list[Component]) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.distributed import work_pool_name

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

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        asyncio.run(wait())


# --- up / down / status ------------------------------------------------------------------------


def read_state(stack_dir: Path) -> dict[str, Any] | None:
    path = stack_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def components(state: dict[str, Any]) -> list[Component]:
    return [Component(**c) for c in state["components"]]


def up(
    cfg: ExperimentConfig, config_path: Path, stack_dir: Path, owner_configs: dict[str, Path] | None = None
) -> dict[str, Any]:
    """Start the stack (or report the running one); return its state with `already_running`."""
    stack_dir = stack_dir.resolve()
    state = read_state(stack_dir)
    if state is not None:
        alive = [is_alive(c) for c in components(state)]
        if all(alive):
            return {**state, "already_running": True}
        if any(alive):
            raise StackError(
                f"the stack in {stack_dir} is partly running: run `fgrpo stack down --dir {stack_dir}` first"
            )
    owner_configs = owner_configs or {}
    unknown = sorted(set(owner_configs) - {c.id for c in cfg.clients})
    if unknown:
        raise StackError(
            f"--owner-config names unknown owners {unknown}; owners are {[c.id for c in cfg.clients]}"
        )
    stack_dir.mkdir(parents=True, exist_ok=True)
    started: list[Component] = []
    try:
        env = _start_servers(cfg, stack_dir, started)
        keys = env.pop("_keys")  # type: ignore[arg-type]
        _deploy_clients(env["PREFECT_API_URL"], cfg)
        workers = [
            _start_worker(
                spec.id, env, keys[spec.id], owner_configs.get(spec.id, config_path).resolve(), cfg, stack_dir
            )
            for spec in cfg.clients
        ]
        started.extend(workers)
        _wait_workers(env["PREFECT_API_URL"], cfg, workers)
    except BaseException:
        for comp in reversed(started):
            stop(comp)
        raise
    coordinator_key = keys["coordinator"]
    _write_env_file(
        stack_dir / "coordinator.env",
        {
            **env,
            "AWS_ACCESS_KEY_ID": coordinator_key[0],
            "AWS_SECRET_ACCESS_KEY": coordinator_key[1],
            "AWS_DEFAULT_REGION": cfg.store.region,
        },
    )
    state = {
        "experiment": cfg.name,
        "config": str(config_path.resolve()),
        "bucket": cfg.store.bucket,
        "owners": [c.id for c in cfg.clients],
        "env": env,
        "components": [asdict(c) for c in started],
    }
    (stack_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    return {**state, "already_running": False}


def _start_servers(cfg: ExperimentConfig, stack_dir: Path, started: list[Component]) -> dict[str, Any]:
    """Prefect, MLflow and S3 servers, started together and then awaited."""
    base = _base_env()
    p_port, m_port, s_port = free_port(), free_port(), free_port()
    prefect_home = stack_dir / "prefect"
    prefect = spawn(
        "prefect-server",
        [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(p_port)],
        {**base, "PREFECT_HOME": str(prefect_home)},
        stack_dir,
        f"http://{HOST}:{p_port}",
    )
    started.append(prefect)
    mlflow_dir = stack_dir / "mlflow"
    (mlflow_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    mlflow = spawn(
        "mlflow-server",
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{mlflow_dir / 'mlflow.db'}",
            "--artifacts-destination",
            str(mlflow_dir / "artifacts"),
            "--host",
            HOST,
            "--port",
            str(m_port),
            "--workers",
            "1",
        ],
        {**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stack_dir,
        f"http://{HOST}:{m_port}",
    )
    started.append(mlflow)
    minio = shutil.which("minio")
    s3_url = f"http://{HOST}:{s_port}"
    root = ("fgrpo-root", secrets.token_urlsafe(24))
    if minio is not None:
        s3 = spawn(
            "s3-server",
            [
                minio,
                "server",
                str(stack_dir / "minio"),
                "--address",
                f"{HOST}:{s_port}",
                "--console-address",
                f"{HOST}:{free_port()}",
            ],
            {**base, "MINIO_ROOT_USER": root[0], "MINIO_ROOT_PASSWORD": root[1]},
            stack_dir,
            s3_url,
        )
    else:
        s3 = spawn(
            "s3-server",
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(s_port)],
            base,
            stack_dir,
            s3_url,
        )
    started.append(s3)
    wait_http(s3, f"{s3_url}/minio/health/live" if minio else f"{s3_url}/moto-api/")
    keys = provision_minio(s3_url, cfg, root, stack_dir) if minio else provision_moto(s3_url, cfg)
    wait_http(mlflow, f"{mlflow.url}/health")
    wait_http(prefect, f"{prefect.url}/api/health")
    return {
        "PREFECT_API_URL": f"{prefect.url}/api",
        "MLFLOW_TRACKING_URI": mlflow.url,
        ENDPOINT_ENV: s3_url,
        "_keys": keys,
    }


def _start_worker(
    owner: str,
    env: dict[str, str],
    key: tuple[str, str],
    owner_config: Path,
    cfg: ExperimentConfig,
    stack_dir: Path,
) -> Component:
    """One owner's worker: only its own credentials, config and Prefect home."""
    from flows.distributed import work_pool_name
    from flows.owner import OWNER_CONFIG_ENV, OWNER_ID_ENV

    home = stack_dir / "workers" / owner
    home.mkdir(parents=True, exist_ok=True)
    python_path = os.pathsep.join(p for p in (str(REPO_DIR), os.environ.get("PYTHONPATH", "")) if p)
    _write_env_file(
        stack_dir / "credentials" / f"{owner}.env",
        {"AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1]},
    )
    worker_env = {
        **_base_env(),
        "PREFECT_API_URL": env["PREFECT_API_URL"],
        "PREFECT_HOME": str(home),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        ENDPOINT_ENV: env[ENDPOINT_ENV],
        "AWS_ACCESS_KEY_ID": key[0],
        "AWS_SECRET_ACCESS_KEY": key[1],
        "AWS_DEFAULT_REGION": cfg.store.region,
        OWNER_CONFIG_ENV: str(owner_config),
        OWNER_ID_ENV: owner,
        "PYTHONPATH": python_path,
    }
    pool = work_pool_name(owner)
    cmd = [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--name",
        f"{pool}-worker",
    ]
    return spawn(f"worker-{owner}", cmd, worker_env, stack_dir, env["PREFECT_API_URL"])


def down(stack_dir: Path) -> list[dict[str, Any]]:
    """Stop every process `up` started, workers first (a worker outlives a stopped server)."""
    state = read_state(stack_dir.resolve())
    if state is None:
        raise StackError(f"no stack state in {stack_dir} ({STATE_FILE}); nothing was started there")
    report = []
    for comp in reversed(components(state)):
        was_alive = is_alive(comp)
        stop(comp)
        (stack_dir / "pids" / f"{comp.name}.pid").unlink(missing_ok=True)
        report.append({"name": comp.name, "pid": comp.pid, "was_alive": was_alive, "alive": is_alive(comp)})
    return report


def status(stack_dir: Path) -> list[dict[str, Any]]:
    """Each component: name, pid, alive, URL."""
    state = read_state(stack_dir.resolve())
    if state is None:
        return []
    return [
        {"name": c.name, "pid": c.pid, "alive": is_alive(c), "url": c.url, "log": c.log}
        for c in components(state)
    ]
