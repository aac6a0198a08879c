"""What a config says about MLflow: where it is (the tracking URI, the artifact root next to a
SQLite database) and the config itself as the parent run's params. No MLflow calls here."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from fgrpo_core.config import TrackingSettings

PARAM_VALUE_LIMIT = 6000  # MLflow rejects longer parameter values
TRUNCATION_MARKER = "...[truncated]"


def resolve_tracking_uri(settings: TrackingSettings, output_dir: Path) -> str:
    """The configured URI, else MLFLOW_TRACKING_URI, else SQLite in the output folder."""
    if uri := settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    folder = Path(output_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def flatten_config(cfg: BaseModel) -> dict[str, str]:
    """Every leaf of a (nested) pydantic model as `dotted.key -> str`, for MLflow params.

    Lists of scalars are comma-joined; lists of models (clients) are keyed by index
    (`clients.0.id`). Values beyond MLflow's 6000 characters end with a truncation marker.
    """
    flat: dict[str, str] = {}

    def visit(prefix: str, value: object) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                visit(f"{prefix}{name}.", getattr(value, name))
        elif isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
            for index, item in enumerate(value):
                visit(f"{prefix}{index}.", item)
        else:
            text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
            if len(text) > PARAM_VALUE_LIMIT:
                text = text[: PARAM_VALUE_LIMIT - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
            flat[prefix.rstrip(".")] = text

    visit("", cfg)
    return flat


def sqlite_artifact_root(tracking_uri: str) -> Path | None:
    # With SQLite, MLflow would put artifacts under ./mlruns of the working directory; keep them
    # next to the database instead.
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
