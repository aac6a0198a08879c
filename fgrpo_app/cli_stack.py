"""`fgrpo stack`: the distributed topology on 127.0.0.1 (fgrpo_app/stack.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fgrpo_app.cli_common import ConfigArgument, ConfigOption, config_path, fail
from fgrpo_core.config import load_config
from fgrpo_core.errors import ConfigError, FgrpoError

stack_app = typer.Typer(
    no_args_is_help=True, help="Local Prefect + MLflow + S3 stack with one worker per owner."
)
_STACK_DIR_OPTION = typer.Option("--dir", help="Folder of the stack's data, logs, pid files and state.")


@stack_app.command("up")
def stack_up(
    config: ConfigArgument = None,
    config_opt: ConfigOption = None,
    stack_dir: Annotated[Path, _STACK_DIR_OPTION] = Path("runs/stack"),
    owner_config: Annotated[
        list[str] | None, typer.Option(help="OWNER=PATH: that owner's own copy of the config (repeatable).")
    ] = None,
) -> None:
    """Start the servers, one work pool + deployment + worker per owner; print the env to use."""
    from fgrpo_app import stack

    cfg_path = config_path(config, config_opt, "stack up")
    try:
        cfg = load_config(cfg_path)
        pairs = [item.split("=", 1) for item in owner_config or []]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError("--owner-config takes OWNER=PATH")
        state = stack.up(cfg, cfg_path, stack_dir, {owner: Path(file) for owner, file in pairs})
    except FgrpoError as err:
        fail(str(err), code=1)
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
        fail(str(err), code=1)
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
