"""What every stored object of an experiment shares: its identity, and writing a key once."""

from __future__ import annotations

import json
from dataclasses import dataclass

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import FgrpoError
from fgrpo_core.manifest import config_hash, sha256_hex
from fgrpo_io.store import ObjectExistsError, ObjectStore


class ConflictError(FgrpoError):
    """A different object already sits under a key that is written once."""


@dataclass(frozen=True)
class Identity:
    """What every manifest of an experiment must agree on."""

    prefix: str
    experiment: str
    base_model_id: str
    base_revision: str
    adapter_config_hash: str


def identity(cfg: ExperimentConfig) -> Identity:
    return Identity(
        prefix=cfg.store.prefix,
        experiment=cfg.name,
        base_model_id=cfg.model.model_id,
        base_revision=cfg.model.revision,
        adapter_config_hash=config_hash(cfg.lora),
    )


def put_once(store: ObjectStore, key: str, data: bytes) -> None:
    """Write ``data`` once; an identical retry passes, different bytes are a conflict."""
    try:
        store.put_bytes(key, data)
    except ObjectExistsError:
        if sha256_hex(store.get_bytes(key)) != sha256_hex(data):
            raise ConflictError(
                f"{store.uri(key)} already holds different bytes; committed objects are never "
                "overwritten: start a new experiment name or delete the run's folder by hand"
            ) from None


def put_json_once(store: ObjectStore, key: str, obj: object) -> None:
    put_once(store, key, json.dumps(obj, indent=2, sort_keys=True).encode())
