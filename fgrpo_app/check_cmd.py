"""`fgrpo check CONFIG [--client ID]`: the pre-flight of every owner, each problem with what to fix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fgrpo_core.config import load_config
from fgrpo_core.errors import ConfigError
from fgrpo_io.environment import apply_defaults


def check(
    config: Annotated[Path, typer.Argument(help="YAML experiment config.")],
    client: Annotated[str | None, typer.Option("--client", help="Check this owner only.")] = None,
) -> None:
    """Load each owner's data and the model, run its reward on a few examples, check the LoRA targets."""
    apply_defaults()
    try:
        cfg = load_config(config)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    from fgrpo_core.preflight import preflight  # loads torch and the model

    problems = preflight(cfg, client)
    for problem in problems:
        typer.echo(f"problem: {problem}", err=True)
    if problems:
        typer.echo(f"{config}: {len(problems)} problem(s); fix them before `fgrpo run`", err=True)
        raise typer.Exit(1)
    owners = [c.id for c in cfg.clients if client is None or c.id == client]
    typer.echo(f"{config}: ready ({len(owners)} owner(s): {', '.join(owners)})")
