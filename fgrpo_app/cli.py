"""The `fgrpo` command: run an experiment, validate a config, report on an experiment."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fgrpo_app.check_cmd import check
from fgrpo_app.pull_cmd import pull
from fgrpo_core.config import ExperimentConfig, load_config, parse_config
from fgrpo_core.errors import ConfigError, FgrpoError
from fgrpo_io.environment import apply_defaults

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Federated GRPO with FGRPO aggregation.")
app.command("check")(check)
app.command("pull")(pull)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _load(config: Path, rounds: int | None, strategy: str | None) -> ExperimentConfig:
    cfg = load_config(config)
    overrides: dict[str, Any] = {}
    if rounds is not None:
        overrides["federation"] = {**cfg.federation.model_dump(), "rounds": rounds}
    if strategy is not None:
        overrides["aggregation"] = {**cfg.aggregation.model_dump(), "strategy": strategy}
    if overrides:
        cfg = parse_config({**cfg.model_dump(), **overrides})
    return cfg


@app.command("validate-config")
def validate_config(config: Annotated[Path, typer.Argument(help="YAML experiment config.")]) -> None:
    """Check a config file; list every error with its field path."""
    try:
        cfg = load_config(config)
    except ConfigError as err:
        _fail(str(err))
        return
    typer.echo(f"{config}: valid ({len(cfg.clients)} clients, {cfg.federation.rounds} rounds)")


def _progress_printer(json_mode: bool) -> Any:
    last: dict[str, float] = {}

    def hook(round_idx: int, client_id: str, step: int, total: int, reward: float) -> None:
        if json_mode:
            return
        key = f"{round_idx}/{client_id}"
        now = time.monotonic()
        if step == total or now - last.get(key, 0.0) > 2.0:
            last[key] = now
            typer.echo(
                f"  round {round_idx} | {client_id:<12} | step {step}/{total} | reward {reward:.3f}", err=True
            )

    return hook


def _summary_line(report: dict[str, Any]) -> str:
    ev = report["evaluation"]
    fams = ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in sorted(ev["families"].items()))
    weights = ", ".join(f"{r['client_id']} {r['weight']:.2f}" for r in report["rows"])
    reg = report.get("registry") or {}
    alias = f" | v{reg['version']} -> {reg['alias']}" if reg else ""
    return (
        f"round {report['round']}: macro acc {ev['macro_accuracy']:.3f} ({fams}) | weights {weights}{alias}"
    )


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML experiment config.")],
    rounds: Annotated[int | None, typer.Option(help="Override federation.rounds.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Override aggregation.strategy.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")] = False,
) -> None:
    """Run (or resume) a federated experiment through the Prefect flows."""
    try:
        cfg = _load(config, rounds, strategy)
    except ConfigError as err:
        _fail(str(err))
        return
    apply_defaults()
    if json_out:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from fgrpo_io import runtime, timing
    from flows.experiment import run_experiment

    runtime.set_progress_hook(_progress_printer(json_out))
    started = time.monotonic()
    try:
        with runtime.flow_settings(), timing.collect() as collected:
            summary = run_experiment(cfg).model_dump(mode="json")
    except FgrpoError as err:
        _fail(f"{type(err).__name__}: {err}", code=1)
        return
    wall_s = time.monotonic() - started
    summary["wall_time_s"] = round(wall_s, 2)
    # Orchestration is what the tasks' own measures leave of the wall time (fgrpo_io/timing.py).
    summary["timings"] = timing.with_orchestration(collected.totals, wall_s)
    summary["store"] = _store_description(cfg)
    summary["registry"] = _registry_summary(cfg) if cfg.tracking.enabled else None
    if json_out:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    for report in summary["rounds"]:
        typer.echo(_summary_line(report))
    typer.echo(f"done in {summary['wall_time_s']:.1f} s; store: {summary['store']}")
    typer.echo(f"time split: {timing.summary_line(summary['timings'])}")
    if summary["mlflow_run_id"]:
        typer.echo(f"MLflow parent run {summary['mlflow_run_id']}; registry: {summary['registry']}")


def _store_description(cfg: ExperimentConfig) -> str:
    from fgrpo_io import layout
    from fgrpo_io.store import make_store

    return make_store(cfg.store).uri(layout.global_prefix(cfg.store.prefix, cfg.name))


def _registry_summary(cfg: ExperimentConfig) -> dict[str, Any]:
    from fgrpo_io.registry import get_aliases, registered_name
    from fgrpo_io.tracking import tracker_for

    name = registered_name(cfg)
    return {"model": name, "aliases": get_aliases(tracker_for(cfg).client, name)}


@app.command()
def report(
    experiment: Annotated[str, typer.Argument(help="Experiment name (the config's `name`).")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config giving the store and MLflow settings.")
    ] = None,
    store_root: Annotated[
        Path | None, typer.Option(help="Folder of a local store (instead of --config).")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(help="Store key prefix (default: the config's, else 'fgrpo').")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow URI (default: the config's, else $MLFLOW_TRACKING_URI).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="HTML file (default: <output_dir>/<experiment>/report.html).")
    ] = None,
) -> None:
    """Write a self-contained HTML report of an experiment: plots, round table, registry, config."""
    apply_defaults()
    from fgrpo_app.report_html import build_report
    from fgrpo_io.store import LocalStore, ObjectStore, make_store
    from fgrpo_io.tracking import flatten_config, resolve_tracking_uri

    started = time.monotonic()
    model_name, output_dir, fallback = f"fgrpo-{experiment}", Path("runs"), None
    try:
        store: ObjectStore
        if config is not None:
            cfg = load_config(config)
            store = make_store(cfg.store)
            key_prefix = cfg.store.prefix if prefix is None else prefix
            if tracking_uri is None and cfg.tracking.enabled:
                tracking_uri = resolve_tracking_uri(cfg.tracking, Path(cfg.output_dir))
            output_dir = Path(cfg.output_dir)
            if cfg.name == experiment:
                model_name = cfg.tracking.registered_model_name or model_name
                fallback = (flatten_config(cfg), str(config))
        elif store_root is not None:
            store = LocalStore(store_root)
            key_prefix = "fgrpo" if prefix is None else prefix
            tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        else:
            _fail("give --config FILE, or --store-root DIR (and --prefix) to find the experiment's store")
            return
        path = build_report(
            store,
            key_prefix,
            experiment,
            tracking_uri,
            model_name,
            out or output_dir / experiment / "report.html",
            fallback,
        )
    except FgrpoError as err:
        _fail(str(err), code=1)
        return
    size_kb = path.stat().st_size / 1024
    typer.echo(f"report of {experiment}: {path} ({size_kb:.0f} KB, {time.monotonic() - started:.1f} s)")


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except FgrpoError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()


# --- `fgrpo stack`: the distributed topology on 127.0.0.1 (fgrpo_app/stack.py) ---------------------
stack_app = typer.Typer(
    no_args_is_help=True, help="Local Prefect + MLflow + S3 stack with one worker per owner."
)
_STACK_DIR_OPTION = typer.Option("--dir", help="Folder of the stack's data, logs, pid files and state.")


@stack_app.command("up")
def stack_up(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Experiment config: the owners and the bucket.")
    ],
    stack_dir: Annotated[Path, _STACK_DIR_OPTION] = Path("runs/stack"),
    owner_config: Annotated[
        list[str] | None, typer.Option(help="OWNER=PATH: that owner's own copy of the config (repeatable).")
    ] = None,
) -> None:
    """Start the servers, one work pool + deployment + worker per owner; print the env to use."""
    from fgrpo_app import stack

    try:
        cfg = load_config(config)
        pairs = [item.split("=", 1) for item in owner_config or []]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError("--owner-config takes OWNER=PATH")
        state = stack.up(cfg, config, stack_dir, {owner: Path(path) for owner, path in pairs})
    except FgrpoError as err:
        _fail(str(err), code=1)
        return
    typer.echo("stack already running" if state["already_running"] else f"stack up in {stack_dir}")
    for row in stack.status(stack_dir):
        typer.echo(
            f"  {row['name']:<20} pid {row['pid']:<8} {'alive' if row['alive'] else 'DEAD':<6} {row['url']}"
        )
    typer.echo("coordinator environment (credentials: source the file):")
    for name, value in state["env"].items():
        typer.echo(f"  export {name}={value}")
    typer.echo(f"  source {stack_dir / 'coordinator.env'}")


@stack_app.command("down")
def stack_down(stack_dir: Annotated[Path, _STACK_DIR_OPTION] = Path("runs/stack")) -> None:
    """Stop exactly the processes `up` started (workers first); keep the data."""
    from fgrpo_app import stack

    try:
        rows = stack.down(stack_dir)
    except FgrpoError as err:
        _fail(str(err), code=1)
        return
    for row in rows:
        typer.echo(
            f"  {row['name']:<20} pid {row['pid']:<8} {'stopped' if row['was_alive'] else 'was not running'}"
        )


@stack_app.command("status")
def stack_status(
    stack_dir: Annotated[Path, _STACK_DIR_OPTION] = Path("runs/stack"),
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Each component of the stack: pid, alive, URL."""
    from fgrpo_app import stack

    rows = stack.status(stack_dir)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no stack in {stack_dir}")
    for row in rows:
        typer.echo(
            f"  {row['name']:<20} pid {row['pid']:<8} {'alive' if row['alive'] else 'stopped':<7} {row['url']}"
        )


app.add_typer(stack_app, name="stack")
# --- end of `fgrpo stack` ----------------------------------------------------------------------
