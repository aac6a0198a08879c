"""Where an experiment's record lives: the object store (SPEC §7) and MLflow (SPEC §6).

Locations only, unpinned by the experiment's config pin (fgrpo_core/pinning.py); credentials
come from the environment, never from here.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from fgrpo_core.strict import _Strict

# One store prefix segment: no empty, "." or ".." segments, nothing that escapes a folder.
PREFIX_SEGMENT_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"


class StoreSettings(_Strict):
    """Where adapters, deltas, manifests and state live (SPEC §7). Credentials: environment only."""

    kind: Literal["local", "s3"] = Field("local", description="Local directory or S3-compatible store.")
    root: str = Field("runs/store", description="Folder of the local store.")
    bucket: str = Field("fgrpo", min_length=3, description="S3 bucket.")
    prefix: str = Field("fgrpo", description="Key prefix inside the bucket or folder.")

    @field_validator("prefix")
    @classmethod
    def _safe_prefix(cls, value: str) -> str:
        bad = [s for s in value.split("/") if not re.fullmatch(PREFIX_SEGMENT_PATTERN, s)] if value else []
        if bad:
            raise ValueError(
                f"store.prefix {value!r} has segments {bad}: each '/'-separated segment must match "
                f"{PREFIX_SEGMENT_PATTERN} (no '', '.' or '..'); use '' for no prefix"
            )
        return value

    endpoint_url: str | None = Field(
        None, description="S3 endpoint (MinIO, moto); overridden by FGRPO_S3_ENDPOINT_URL."
    )
    region: str = Field("us-east-1", description="S3 region name.")


class TrackingSettings(_Strict):
    """MLflow tracking and registry (SPEC §6)."""

    enabled: bool = Field(True, description="Log to MLflow.")
    tracking_uri: str | None = Field(
        None,
        description="MLflow URI; else MLFLOW_TRACKING_URI; else sqlite in the output folder.",
    )
    registered_model_name: str | None = Field(
        None, description="Registered model name; default 'fgrpo-<experiment name>'."
    )
