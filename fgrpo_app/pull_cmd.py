"""`fgrpo pull EXPERIMENT --alias champion --out DIR`: a registered adapter, ready for one load call.

The adapter folder's ``adapter_config.json`` names its base model by Hub id and revision, or by
absolute folder (``fgrpo_core/base_models.py``), so the printed call works from any directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from fgrpo_core.config import load_config
from fgrpo_core.errors import FgrpoError
from fgrpo_io.environment import apply_defaults


def load_call(folder: Path) -> str:
    """The Python that loads the adapter in ``folder`` onto its base model, for a user to paste."""
    config = json.loads((folder / "adapter_config.json").read_text())
    base, revision = config["base_model_name_or_path"], config.get("revision")
    rev = f", revision={revision!r}" if revision else ""
    return (
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base!r}{rev}), {str(folder)!r})\n"
        f"tokenizer = AutoTokenizer.from_pretrained({base!r}{rev})"
    )


def pull(
    experiment: Annotated[str, typer.Argument(help="Experiment name (the config's `name`).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the adapter into.")],
    alias: Annotated[str, typer.Option(help="Registry alias: champion or challenger.")] = "champion",
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config giving MLflow settings.")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow URI (default: $MLFLOW_TRACKING_URI).")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Registered model (default fgrpo-<experiment>).")
    ] = None,
) -> None:
    """Download a registered adapter and print the one call that loads it."""
    apply_defaults()
    import mlflow
    from mlflow.exceptions import MlflowException

    from fgrpo_io.tracking_config import resolve_tracking_uri

    name = model_name or f"fgrpo-{experiment}"
    try:
        if config is not None:
            cfg = load_config(config)
            tracking_uri = tracking_uri or resolve_tracking_uri(cfg.tracking, Path(cfg.output_dir))
            name = model_name or cfg.tracking.registered_model_name or name
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise FgrpoError("give --tracking-uri, --config, or set MLFLOW_TRACKING_URI")
        client = mlflow.MlflowClient(tracking_uri=uri)
        version = client.get_model_version_by_alias(name, alias)
        out.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=str(version.source), dst_path=str(out), tracking_uri=uri
        )
    except (FgrpoError, MlflowException) as err:
        typer.echo(f"error: cannot pull {name}@{alias}: {err}", err=True)
        raise typer.Exit(1) from err
    folder = Path(local).resolve()
    typer.echo(f"# {name} v{version.version} ({alias}), round {version.tags.get('round', '?')}: {folder}")
    if "base_model_id" in version.tags:  # versions registered before these tags have none
        tags = version.tags
        typer.echo(
            f"# base model {tags['base_model_id']} (revision {tags.get('base_model_revision', '?')}); "
            f"adapter sha256 {tags.get('adapter_sha256', '?')}"
        )
    typer.echo(load_call(folder))
