"""What every `fgrpo` sub-command shares: the config argument (positional or --config), errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from fgrpo_core.config import ExperimentConfig, load_config
from fgrpo_core.errors import ConfigError

# `fgrpo run`: the rounds ran, but an owner could not run (its data, reward or model) in some round.
EXIT_OWNER_FAILED = 3

ConfigArgument = Annotated[
    Path | None, typer.Argument(help="YAML experiment config.", show_default=False, metavar="CONFIG")
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="The same as CONFIG (kept for scripts).")
]


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def config_path(positional: Path | None, option: Path | None, command: str) -> Path:
    """The config file, given positionally or with --config (not two different ones)."""
    if positional is not None and option is not None and positional != option:
        fail(f"two configs given ({positional} and --config {option}): give one")
    path = positional or option
    if path is None:
        fail(f"give the experiment config: fgrpo {command} CONFIG (e.g. configs/tiny.yaml)")
    return path


def load_or_fail(path: Path) -> ExperimentConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        fail(str(err))
