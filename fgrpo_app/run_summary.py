"""What `fgrpo run` says at the end: time split, store, and where to look (MLflow, registry, Prefect)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fgrpo_app.cli_common import EXIT_OWNER_FAILED
from fgrpo_core.config import ExperimentConfig
from fgrpo_core.owner_failure import permanent_failures

LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"  # where `fgrpo ui` serves a SQLite tracking store


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI (a SQLite store: the UI `fgrpo ui` starts)."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_MLFLOW_UI
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def prefect_flow_run_url(flow_run_id: str) -> str | None:
    """The flow run's page in the Prefect UI; None without a server (a temporary one is gone)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if not PREFECT_API_URL.value():
        return None

    ui = PREFECT_UI_URL.value()
    return f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run_id}" if ui else None


def failed_owners(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every owner that failed permanently, per round: ``{"round", "client_id", "reason"}``."""
    rows = ((int(r["round"]), row["client_id"], row["reason"]) for r in rounds for row in r["rows"])
    return [{"round": t, "client_id": cid, "reason": why} for t, cid, why in permanent_failures(rows)]


def finish_summary(cfg: ExperimentConfig, summary: dict[str, Any], wall_s: float, flow_run_id: str) -> None:
    """Add wall time, the time split, the store, the registry and the UIs' URLs to ``summary``."""
    from fgrpo_io import layout
    from fgrpo_io.store import make_store
    from fgrpo_io.timing import with_orchestration

    summary["wall_time_s"] = round(wall_s, 2)
    summary["failed_owners"] = failed_owners(summary["rounds"])
    # Orchestration is what the tasks' own measures leave of the wall time (fgrpo_io/timing.py).
    summary["timings"] = with_orchestration(summary["timings"], wall_s)
    summary["store"] = make_store(cfg.store).uri(layout.global_prefix(cfg.store.prefix, cfg.name))
    summary["registry"] = None
    summary["mlflow_run_url"] = None
    summary["prefect_flow_run_id"] = flow_run_id
    summary["prefect_flow_run_url"] = prefect_flow_run_url(flow_run_id)
    if cfg.tracking.enabled and summary.get("mlflow_run_id"):
        from fgrpo_io.registry import get_aliases, registered_name
        from fgrpo_io.tracking import tracker_for

        tracker = tracker_for(cfg)
        name = registered_name(cfg)
        summary["registry"] = {"model": name, "aliases": get_aliases(tracker.client, name)}
        run = tracker.client.get_run(summary["mlflow_run_id"])
        summary["mlflow_tracking_uri"] = tracker.uri
        summary["mlflow_run_url"] = mlflow_run_url(tracker.uri, run.info.experiment_id, run.info.run_id)


def print_summary(summary: dict[str, Any], config: Path) -> None:
    from fgrpo_io.timing import summary_line

    rounds = summary["rounds"]
    if rounds and summary.get("initial_evaluation"):
        first, last = (
            summary["initial_evaluation"]["macro_accuracy"],
            rounds[-1]["evaluation"]["macro_accuracy"],
        )
        typer.echo(
            f"macro accuracy {first:.3f} (round 0) -> {last:.3f} (round {rounds[-1]['round']}): "
            f"{100 * (last - first):+.1f} points"
        )
    typer.echo(f"done in {summary['wall_time_s']:.1f} s; store: {summary['store']}")
    for failed in summary["failed_owners"]:
        typer.echo(f"owner failed: {failed['client_id']} in round {failed['round']}: {failed['reason']}")
    if summary["failed_owners"]:
        typer.echo(
            "the rounds went on without them: each owner fixes what its line names "
            f"(exit code {EXIT_OWNER_FAILED})"
        )
    typer.echo(f"time split: {summary_line(summary['timings'])}")
    if summary["mlflow_run_url"]:
        uri = summary["mlflow_tracking_uri"]
        local = "" if uri.startswith("http") else f" (after `fgrpo ui {config}`)"
        typer.echo(f"MLflow run: {summary['mlflow_run_url']}{local}; tracking URI {uri}")
    if summary["registry"]:
        reg = summary["registry"]
        aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(reg["aliases"].items())) or "none"
        typer.echo(f"registered model: {reg['model']} ({aliases})")
    if summary["prefect_flow_run_url"]:
        typer.echo(f"Prefect flow run: {summary['prefect_flow_run_url']}")
