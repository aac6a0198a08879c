"""Reading and writing adapters, deltas, manifests and server state in the object store.

Objects are written before their manifest, and a manifest is the commit marker: a reader trusts
nothing without one and checks the object's sha256 against it on every read (SPEC §5, §7). No
write overwrites a committed object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.deltas import Encoding, decode, encode
from fgrpo_core.errors import DeltaValidationError, FgrpoError
from fgrpo_core.manifest import (
    ClientManifest,
    GlobalManifest,
    check_client_manifest,
    check_sha256,
    config_hash,
    sha256_hex,
)
from fgrpo_core.types import Adapter, ClientStats, ServerState
from fgrpo_io import layout
from fgrpo_io.store import ObjectExistsError, ObjectNotFoundError, ObjectStore, get_json, put_json


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


def _put_once(store: ObjectStore, key: str, data: bytes) -> None:
    """Write ``data`` once; an identical retry passes, different bytes are a conflict."""
    try:
        store.put_bytes(key, data)
    except ObjectExistsError:
        existing = store.get_bytes(key)
        if sha256_hex(existing) != sha256_hex(data):
            raise ConflictError(
                f"{store.uri(key)} already holds different bytes; committed objects are never "
                "overwritten: start a new experiment name or delete the run's folder by hand"
            ) from None


def _put_json_once(store: ObjectStore, key: str, obj: object) -> None:
    _put_once(store, key, json.dumps(obj, indent=2, sort_keys=True).encode())


# --- global adapters -------------------------------------------------------------------------


def write_global(
    store: ObjectStore,
    ident: Identity,
    t: int,
    adapter: Adapter,
    clients: list[str],
    strategy: str,
) -> str:
    """Write theta_t and its manifest; return the adapter's key."""
    data = encode(adapter, "float32")
    key = layout.global_adapter_key(ident.prefix, ident.experiment, t)
    _put_once(store, key, data)
    manifest = GlobalManifest(
        experiment=ident.experiment,
        round=t,
        base_model_id=ident.base_model_id,
        base_revision=ident.base_revision,
        adapter_config_hash=ident.adapter_config_hash,
        sha256=sha256_hex(data),
        nbytes=len(data),
        adapter_key=key,
        parent_key=layout.global_adapter_key(ident.prefix, ident.experiment, t - 1) if t > 0 else None,
        clients=clients,
        strategy=strategy,
    )
    mkey = layout.global_manifest_key(ident.prefix, ident.experiment, t)
    if store.exists(mkey):
        # A retry after the manifest was written: keep the committed one.
        read_global_manifest(store, ident, t)
    else:
        put_json(store, mkey, manifest.model_dump(mode="json"))
    return key


def read_global_manifest(store: ObjectStore, ident: Identity, t: int) -> GlobalManifest:
    raw = get_json(store, layout.global_manifest_key(ident.prefix, ident.experiment, t))
    manifest = GlobalManifest.model_validate(raw)
    for name in ("experiment", "base_model_id", "base_revision", "adapter_config_hash"):
        if getattr(manifest, name) != getattr(ident, name):
            raise DeltaValidationError(
                "manifest",
                f"global adapter of round {t}: manifest field '{name}' is "
                f"{getattr(manifest, name)!r}, this config expects {getattr(ident, name)!r}; the "
                "store holds another experiment or model under this name: change `name` or `store`",
            )
    return manifest


def read_global(store: ObjectStore, ident: Identity, t: int) -> Adapter:
    """theta_t, verified against its manifest's sha256."""
    manifest = read_global_manifest(store, ident, t)
    data = store.get_bytes(manifest.adapter_key)
    check_sha256(data, manifest.sha256, store.uri(manifest.adapter_key))
    adapter, _ = decode(data)
    return adapter


# --- client deltas ----------------------------------------------------------------------------


def write_client_delta(
    store: ObjectStore, ident: Identity, t: int, delta: Adapter, stats: ClientStats, encoding: Encoding
) -> tuple[str, ClientManifest]:
    """Upload a client's delta for round t (from theta_{t-1}) and its manifest; return the manifest key."""
    data = encode(delta, encoding)
    key = layout.client_delta_key(ident.prefix, ident.experiment, stats.client_id, t)
    manifest = ClientManifest(
        experiment=ident.experiment,
        round=t,
        client_id=stats.client_id,
        base_model_id=ident.base_model_id,
        base_revision=ident.base_revision,
        adapter_config_hash=ident.adapter_config_hash,
        encoding=encoding,
        sha256=sha256_hex(data),
        nbytes=len(data),
        delta_key=key,
        stats=stats,
    )
    mkey = layout.client_manifest_key(ident.prefix, ident.experiment, stats.client_id, t)
    if store.exists(mkey):
        committed = ClientManifest.model_validate(get_json(store, mkey))
        if committed.sha256 != manifest.sha256:
            raise ConflictError(
                f"{store.uri(mkey)}: client {stats.client_id} already committed a different delta "
                f"for round {t}; a committed delta is never replaced"
            )
        return mkey, committed
    _put_once(store, key, data)
    put_json(store, mkey, manifest.model_dump(mode="json"))
    return mkey, manifest


def committed_client_manifest(
    store: ObjectStore, ident: Identity, t: int, client_id: str
) -> ClientManifest | None:
    """The client's committed manifest for round t, or None when it has not delivered yet."""
    mkey = layout.client_manifest_key(ident.prefix, ident.experiment, client_id, t)
    if not store.exists(mkey):
        return None
    return ClientManifest.model_validate(get_json(store, mkey))


def read_client_delta(
    store: ObjectStore, ident: Identity, t: int, client_id: str
) -> tuple[Adapter, ClientManifest]:
    """A client's delta for round t after the manifest and sha256 checks (SPEC §5)."""
    mkey = layout.client_manifest_key(ident.prefix, ident.experiment, client_id, t)
    try:
        raw = store.get_bytes(mkey)
    except ObjectNotFoundError as err:
        raise DeltaValidationError(
            "manifest", f"client {client_id} uploaded no manifest for round {t}"
        ) from err
    try:
        # Not JSON, or not a manifest: pydantic reports both as a ValidationError (a ValueError).
        manifest = ClientManifest.model_validate_json(raw)
    except ValueError as err:
        raise DeltaValidationError(
            "manifest",
            f"client {client_id}: malformed manifest {store.uri(mkey)}: {err}; upload the manifest "
            "that fgrpo writes (fgrpo_io.exchange.write_client_delta)",
        ) from err
    check_client_manifest(
        manifest,
        experiment=ident.experiment,
        round=t,
        client_id=client_id,
        base_model_id=ident.base_model_id,
        base_revision=ident.base_revision,
        adapter_config_hash=ident.adapter_config_hash,
    )
    expected_key = layout.client_delta_key(ident.prefix, ident.experiment, client_id, t)
    if manifest.delta_key != expected_key:
        raise DeltaValidationError(
            "manifest",
            f"client {client_id}: manifest points at {manifest.delta_key!r}, outside its own "
            f"prefix; expected {expected_key!r}",
        )
    try:
        data = store.get_bytes(manifest.delta_key)
    except ObjectNotFoundError as err:
        raise DeltaValidationError(
            "manifest",
            f"client {client_id}: its manifest points at {store.uri(manifest.delta_key)}, which does "
            "not exist; upload the delta before its manifest",
        ) from err
    check_sha256(data, manifest.sha256, store.uri(manifest.delta_key))
    delta, _ = decode(data)
    return delta, manifest


# --- round tables -------------------------------------------------------------------------------


def write_round_table(store: ObjectStore, ident: Identity, t: int, table: dict[str, Any]) -> str:
    """Write round t's table (what its commit returns: keys and rows) once, before its state."""
    key = layout.round_table_key(ident.prefix, ident.experiment, t)
    _put_json_once(store, key, table)
    return key


def read_committed_round(store: ObjectStore, ident: Identity, t: int) -> dict[str, Any] | None:
    """Round t's table if round t is committed (its state exists), else None.

    A coordinator interrupted after a commit but before the round's report resumes from this
    table: nothing is aggregated, trained or written twice.
    """
    if not store.exists(layout.state_key(ident.prefix, ident.experiment, t)):
        return None
    table: dict[str, Any] = get_json(store, layout.round_table_key(ident.prefix, ident.experiment, t))
    return table


# --- server state -------------------------------------------------------------------------------


def write_state(store: ObjectStore, ident: Identity, state: ServerState) -> str:
    """Commit the server state after round ``state.round``: the round's commit marker."""
    key = layout.state_key(ident.prefix, ident.experiment, state.round)
    _put_json_once(store, key, state.model_dump(mode="json"))
    return key


def last_committed_round(store: ObjectStore, ident: Identity) -> int | None:
    keys = store.list_keys(layout.state_prefix(ident.prefix, ident.experiment))
    rounds = layout.committed_rounds(keys)
    return rounds[-1] if rounds else None


def read_state(store: ObjectStore, ident: Identity, t: int) -> ServerState:
    return ServerState.model_validate(get_json(store, layout.state_key(ident.prefix, ident.experiment, t)))
