"""The `fgrpo` command: run an experiment, validate a config, report on it, open its UIs.

Sub-commands live in their own modules (cli_stack.py, cli_ui.py) and are added below, before
``main`` can run: ``python -m fgrpo_app.cli stack ...`` and the ``fgrpo`` script see the same app.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fgrpo_app.cli_common import (
    EXIT_OWNER_FAILED,
    ConfigArgument,
    ConfigOption,
    config_path,
    fail,
    load_or_fail,
)
from fgrpo_core.config import ExperimentConfig, parse_config
from fgrpo_core.errors import ConfigError, FgrpoError
from fgrpo_io.environment import apply_defaults

EXIT_CODES = (
    "Exit codes: 0 done; 1 the experiment failed (a quorum, a store, MLflow or Prefect error, "
    "another coordinator holding the experiment, a config that differs from the experiment's pin: "
    "the message names it); 2 bad usage or an invalid config (every error with its field path or "
    "file:line); 3 the rounds ran but an owner failed permanently in some round (its data, reward or "
    "model: the summary lists each with what to fix; the rounds went on without it). "
    'Interrupted (Ctrl-C): 1 and "Aborted!"; `fgrpo run` again resumes after the last '
    "committed round."
)
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Federated GRPO with FGRPO aggregation.",
    epilog=EXIT_CODES,
)


def _override(cfg: ExperimentConfig, rounds: int | None, strategy: str | None) -> ExperimentConfig:
    overrides: dict[str, Any] = {}
    if rounds is not None:
        overrides["federation"] = {**cfg.federation.model_dump(), "rounds": rounds}
    if strategy is not None:
        overrides["aggregation"] = {**cfg.aggregation.model_dump(), "strategy": strategy}
    return parse_config({**cfg.model_dump(), **overrides}) if overrides else cfg


@app.command("validate-config")
def validate_config(config: ConfigArgument = None, config_opt: ConfigOption = None) -> None:
    """Check a config file; list every error with its field path (YAML errors with file:line)."""
    path = config_path(config, config_opt, "validate-config")
    cfg = load_or_fail(path)
    typer.echo(f"{path}: valid ({len(cfg.clients)} clients, {cfg.federation.rounds} rounds)")


@app.command()
def run(
    config: ConfigArgument = None,
    config_opt: ConfigOption = None,
    rounds: Annotated[int | None, typer.Option(help="Override federation.rounds.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Override aggregation.strategy.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")] = False,
) -> None:
    """Run (or resume) a federated experiment through the Prefect flows, with a live view."""
    path = config_path(config, config_opt, "run")
    try:
        cfg = _override(load_or_fail(path), rounds, strategy)
    except ConfigError as err:
        fail(str(err))
    apply_defaults()
    from fgrpo_app.cli_live import LiveView, round_line
    from fgrpo_app.quiet import quiet_libraries, quiet_prefect_task_runs

    view = LiveView(cfg)
    if json_out:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    quiet_libraries(live=view.interactive and not json_out)

    from prefect.settings import PREFECT_API_URL

    from fgrpo_app.run_summary import finish_summary, print_summary
    from fgrpo_io import prefect_settings, runtime, timing
    from flows.experiment import run_experiment

    quiet_prefect_task_runs()
    if not json_out and not PREFECT_API_URL.value():
        typer.echo("starting a temporary Prefect server (about 20 s; set PREFECT_API_URL to use yours)")
    if not json_out:
        runtime.set_progress_hook(view.progress)
        runtime.set_event_hook(view.event)
    if cfg.federation.mode == "embedded":
        # Pre-flight: every owner's data, reward and model, before round 1 (fgrpo check CONFIG).
        from fgrpo_core.preflight import preflight

        problems = preflight(cfg, load=runtime.preload)  # round 1 borrows the model it loads
        if problems:
            fail("owners cannot run:\n  " + "\n  ".join(str(p) for p in problems), code=1)
    started = time.monotonic()
    try:
        with (
            prefect_settings.flow_settings(),
            timing.collect() as collected,
            view if not json_out else _nothing(),
        ):
            state = run_experiment(cfg, return_state=True)
            summary: dict[str, Any] = state.result().model_dump(mode="json")  # raises the flow's exception
        summary["timings"] = collected.totals
    except FgrpoError as err:
        fail(f"{type(err).__name__}: {err}", code=1)
    finally:
        runtime.set_progress_hook(None)
        runtime.set_event_hook(None)
    finish_summary(cfg, summary, time.monotonic() - started, str(state.state_details.flow_run_id))
    if json_out:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        for report in summary["rounds"]:
            if int(report["round"]) not in view.committed:  # the round flow did not announce it
                typer.echo(round_line(report))
        print_summary(summary, path)
    if summary["failed_owners"]:
        raise typer.Exit(EXIT_OWNER_FAILED)


class _nothing:  # noqa: N801 - a null context manager for the --json path
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@app.command()
def report(
    target: Annotated[
        str, typer.Argument(help="Experiment name, or its config file (then --config is not needed).")
    ],
    config_arg: ConfigArgument = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config giving the store and MLflow settings.")
    ] = None,
    store_root: Annotated[
        Path | None, typer.Option(help="Folder of a local store (instead of a config).")
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
    from fgrpo_app.report_data import read_store
    from fgrpo_io.store import LocalStore, ObjectStore, make_store

    started = time.monotonic()
    experiment = target
    config = config_path(config_arg, config, "report") if config_arg or config else None
    if config is None and (target.endswith((".yaml", ".yml")) or Path(target).is_file()):
        config = Path(target)
    cfg = load_or_fail(config) if config is not None else None
    if cfg is not None and experiment == str(config):
        experiment = cfg.name
    store: ObjectStore
    if cfg is not None:
        store, key_prefix = make_store(cfg.store), cfg.store.prefix if prefix is None else prefix
    elif store_root is not None:
        store, key_prefix = LocalStore(store_root), "fgrpo" if prefix is None else prefix
    else:
        fail("give the experiment's config (fgrpo report CONFIG), or --store-root DIR (and --prefix)")
    try:
        # The store first: a wrong name fails in a second, before MLflow and matplotlib load.
        data = read_store(store, key_prefix, experiment)
        from fgrpo_app.report_html import build_report
        from fgrpo_io.tracking_config import flatten_config, resolve_tracking_uri

        model_name, output_dir, fallback = f"fgrpo-{experiment}", Path("runs"), None
        if cfg is None:
            tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        else:
            if tracking_uri is None and cfg.tracking.enabled:
                tracking_uri = resolve_tracking_uri(cfg.tracking, Path(cfg.output_dir))
            output_dir = Path(cfg.output_dir)
            if cfg.name == experiment:
                model_name = cfg.tracking.registered_model_name or model_name
                fallback = (flatten_config(cfg), str(config))
        path = build_report(
            data, tracking_uri, model_name, out or output_dir / experiment / "report.html", fallback
        )
    except FgrpoError as err:
        fail(str(err), code=1)
    size_kb = path.stat().st_size / 1024
    typer.echo(f"report of {experiment}: {path} ({size_kb:.0f} KB, {time.monotonic() - started:.1f} s)")


def _add_sub_commands() -> None:
    from fgrpo_app.check_cmd import check
    from fgrpo_app.cli_stack import stack_app
    from fgrpo_app.cli_ui import ui
    from fgrpo_app.pull_cmd import pull
    from fgrpo_app.rollback_cmd import rollback

    app.command("check")(check)
    app.command("pull")(pull)
    app.command("rollback")(rollback)
    app.add_typer(stack_app, name="stack")
    app.command()(ui)


_add_sub_commands()


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except FgrpoError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
