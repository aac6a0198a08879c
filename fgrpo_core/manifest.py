"""Manifests that travel next to every delta and global adapter (SPEC §1 step 5, §5, §7).

A manifest says what a blob is (round, client, base model, adapter config, sha256) so that the
coordinator can refuse a replay of an older round, a delta from another experiment or base model,
or a delta that claims to be another client's, before any arithmetic. Pure: no I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fgrpo_core.deltas import sha256_hex
from fgrpo_core.errors import ConfigError, DeltaValidationError
from fgrpo_core.types import ClientStats, GlobalStep

SCHEMA_VERSION: Final = 1
SHA256_PATTERN = r"^[0-9a-f]{64}$"


def utc_now_iso() -> str:
    """The current UTC time as an ISO-8601 string (manifest timestamps)."""
    return datetime.now(UTC).isoformat()


def _check_iso(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError as err:
        raise ValueError(f"created_at {value!r} is not an ISO-8601 timestamp") from err
    return value


IsoTimestamp = Annotated[str, AfterValidator(_check_iso)]


class _StoredObjectManifest(BaseModel):
    """What every manifest says of its object: experiment, round, base model, adapter, bytes."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Manifest format version.")
    experiment: str = Field(description="Experiment name the object belongs to.")
    round: int = Field(ge=0, description="Round t of the object (see the subclass).")
    base_model_id: str = Field(description="Frozen base model identifier.")
    base_revision: str = Field(description="Revision of the base model.")
    adapter_config_hash: str = Field(description="config_hash of the LoRA adapter configuration.")
    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of the object file's bytes.")
    nbytes: int = Field(ge=0, description="Size of the object file in bytes.")
    created_at: IsoTimestamp = Field(default_factory=utc_now_iso, description="ISO-8601 creation time.")


class ClientManifest(_StoredObjectManifest):
    """What a client uploads next to its delta (``round``: the round it trained, from theta_{t-1})."""

    client_id: str = Field(description="Client that produced the delta.")
    encoding: Literal["float32", "bfloat16", "int8"] = Field(description="Encoding of the delta.")
    delta_key: str = Field(min_length=1, description="Store key of the delta file.")
    stats: ClientStats = Field(description="The client's scalar report of the round (SPEC §1).")


class GlobalManifest(_StoredObjectManifest):
    """What the coordinator writes next to each global adapter theta_t (``round``: t)."""

    adapter_key: str = Field(min_length=1, description="Store key of the adapter file.")
    parent_key: str | None = Field(description="Key of the previous global adapter (None at round 0).")
    clients: list[str] = Field(description="Clients whose deltas were averaged into this adapter.")
    strategy: str = Field(description="Aggregation strategy that produced it ('init' at round 0).")
    step: GlobalStep | None = Field(
        None,
        description="theta_t as an encoded step from theta_{t-1}, what owners holding theta_{t-1} "
        "download (None: read the adapter itself).",
    )


def check_sha256(data: bytes, expected: str, what: str) -> None:
    """Raise DeltaValidationError(reason="sha256") unless ``data`` hashes to ``expected``."""
    actual = sha256_hex(data)
    if actual != expected:
        raise DeltaValidationError(
            "sha256",
            f"{what}: sha256 {actual} does not match the manifest's {expected} "
            f"(the file is corrupt, truncated or was replaced; upload it again)",
        )


def _canonical_default(value: Any) -> Any:
    # PEFT configs hold target modules as a set: sort it so the hash does not depend on order.
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise ConfigError(
        f"config_hash: a value of type {type(value).__name__} is not JSON-serialisable; "
        f"pass plain strings, numbers, lists and mappings"
    )


def config_hash(obj: Mapping[str, Any] | BaseModel) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of a mapping or pydantic model."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else dict(obj)
    canonical = json.dumps(
        data, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_canonical_default
    )
    return sha256_hex(canonical.encode("utf-8"))
