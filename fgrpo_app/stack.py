"""`fgrpo stack up|down|status`: the distributed topology on 127.0.0.1, without Docker.

A Prefect server (basic auth), an MLflow server and an S3 server (`fgrpo_app.stack_servers`);
one pinned process work pool, one client deployment and one worker process per data owner, with
its own environment and S3 credentials (`fgrpo_app.stack_owners`). Everything `up` starts is
recorded (pid files and `stack.json` under the stack folder, no secret in either), so `down`
stops exactly those processes (workers before servers) and keeps the data. The coordinator's
secrets go to the 0600 file `coordinator.env`, each owner's to `credentials/<owner>.env`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fgrpo_app.processes import Component, StackError, is_alive, stop
from fgrpo_app.stack_owners import deploy_clients, start_worker, wait_workers
from fgrpo_app.stack_servers import s3_backend, start_servers, write_env_file
from fgrpo_core.config import ExperimentConfig

__all__ = ["components", "down", "is_alive", "read_state", "status", "up"]

STATE_FILE = "stack.json"


def read_state(stack_dir: Path) -> dict[str, Any] | None:
    path = stack_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def components(state: dict[str, Any]) -> list[Component]:
    rows = state["components"]
    if any("started_s" not in c for c in rows):
        pids = ", ".join(f"{c['name']} {c['pid']}" for c in rows)
        raise StackError(
            f"{STATE_FILE} was written by an older fgrpo (start times in clock ticks): stop its "
            f"processes by hand ({pids}; each in its own process group), then delete {STATE_FILE}"
        )
    return [Component(**c) for c in rows]


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
    s3_backend()  # refuses MinIO without `mc` before anything starts
    stack_dir.mkdir(parents=True, exist_ok=True)
    started: list[Component] = []
    try:
        servers = start_servers(cfg, stack_dir, started)
        deploy_clients(servers, cfg)
        workers = [
            start_worker(spec.id, servers, owner_configs.get(spec.id, config_path).resolve(), cfg, stack_dir)
            for spec in cfg.clients
        ]
        started.extend(workers)
        wait_workers(servers, cfg, workers)
    except BaseException:
        for comp in reversed(started):
            stop(comp)
        raise
    coordinator_key = servers.keys["coordinator"]
    write_env_file(
        stack_dir / "coordinator.env",
        {
            **servers.env,
            "PREFECT_API_AUTH_STRING": servers.auth_string,
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
        "env": servers.env,
        "components": [asdict(c) for c in started],
    }
    (stack_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    return {**state, "already_running": False}


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
