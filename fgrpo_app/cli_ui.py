"""`fgrpo ui`: the MLflow UI (and, if asked, a Prefect server) on an experiment's own stores."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from fgrpo_app.cli_common import ConfigArgument, ConfigOption, config_path, fail, load_or_fail
from fgrpo_core.errors import FgrpoError
from fgrpo_io.environment import apply_defaults, child_env


def _tool(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else (shutil.which(name) or name)


def ui(
    config: ConfigArgument = None,
    config_opt: ConfigOption = None,
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    prefect: Annotated[
        bool,
        typer.Option("--prefect", help="Also start a Prefect server on this machine's Prefect database."),
    ] = False,
    prefect_port: Annotated[int, typer.Option(help="Port of the Prefect server.")] = 4200,
    check: Annotated[
        bool, typer.Option("--check", help="Start, print the URLs once the UIs answer, then stop (tests).")
    ] = False,
) -> None:
    """Open the experiment's MLflow runs and registered model in the MLflow UI; Ctrl-C stops it."""
    cfg = load_or_fail(config_path(config, config_opt, "ui"))
    apply_defaults()
    from fgrpo_app import processes
    from fgrpo_io.registry import registered_name
    from fgrpo_io.tracking import mlflow_experiment_name, tracker_for
    from fgrpo_io.tracking_config import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking, Path(cfg.output_dir))
    if uri.startswith(("http://", "https://")):
        typer.echo(f"MLflow already runs as a server: {uri}")
        return
    ui_dir = (Path(cfg.output_dir) / "ui").resolve()
    env = child_env(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    started: list[processes.Component] = []
    try:
        experiment = tracker_for(cfg).client.get_experiment_by_name(mlflow_experiment_name(cfg.name))
        mlflow_url = f"http://127.0.0.1:{port}"
        cmd = [_tool("mlflow"), "server", "--backend-store-uri", uri, "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--workers", "1"]
        started.append(processes.spawn("mlflow-ui", cmd, env, ui_dir, mlflow_url))
        if prefect:
            prefect_url = f"http://127.0.0.1:{prefect_port}"
            cmd = [_tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
            started.append(processes.spawn("prefect-ui", cmd, env, ui_dir, prefect_url))
        for comp in started:
            processes.wait_http(comp, comp.url + ("/api/health" if comp.name == "prefect-ui" else "/health"))
        if experiment is None:
            typer.echo(f"MLflow UI: {mlflow_url} (no MLflow experiment {cfg.name!r} yet: run it first)")
        else:
            typer.echo(f"MLflow UI: {mlflow_url}/#/experiments/{experiment.experiment_id}/runs")
        typer.echo(f"registered model: {mlflow_url}/#/models/{registered_name(cfg)}")
        if prefect:
            typer.echo(
                f"Prefect UI: http://127.0.0.1:{prefect_port}/runs (flow runs of this machine; "
                f"run with PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api to log into it)"
            )
        typer.echo(f"logs: {ui_dir / 'logs'}; Ctrl-C stops the UI" + ("s" if prefect else ""))
        while not check:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    except FgrpoError as err:
        fail(str(err), code=1)
    finally:
        for comp in reversed(started):
            processes.stop(comp)
