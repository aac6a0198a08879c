"""Reading and writing adapters, deltas, manifests, round results and server state in the store.

Objects are written before their manifest, and a manifest is the commit marker: a reader trusts
nothing without one and checks the object's sha256 against it (SPEC §5, §7). No write overwrites a
committed object. A global adapter is decoded at most once per process: what this process wrote
or read is kept (the last few rounds) and served again without touching the store's bytes.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.deltas import Encoding, decode, encode
from fgrpo_core.errors import DeltaValidationError, FgrpoError
from fgrpo_core.manifest import ClientManifest, GlobalManifest, check_sha256, config_hash, sha256_hex
from fgrpo_core.types import Adapter, ClientStats, RoundResult, ServerState
from fgrpo_core.update_checks import Expected, check_envelope, expected_delta_nbytes
from fgrpo_io import layout
from fgrpo_io.store import (
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStore,
    ObjectTooLargeError,
    get_json,
    put_json,
)

_CACHE_ROUNDS = 3
_cache_lock = threading.Lock()
_cache: dict[tuple[str, str], Adapter] = {}  # (adapter URI, sha256) -> theta_t
# How many global adapters this process decoded from the store's bytes (tests and benchmarks read it).
decoded_globals = 0


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
        if sha256_hex(store.get_bytes(key)) != sha256_hex(data):
            raise ConflictError(
                f"{store.uri(key)} already holds different bytes; committed objects are never "
                "overwritten: start a new experiment name or delete the run's folder by hand"
            ) from None


def _put_json_once(store: ObjectStore, key: str, obj: object) -> None:
    _put_once(store, key, json.dumps(obj, indent=2, sort_keys=True).encode())


def _remember(uri: str, sha: str, adapter: Adapter) -> None:
    with _cache_lock:
        _cache[(uri, sha)] = adapter
        while len(_cache) > _CACHE_ROUNDS:
            _cache.pop(next(iter(_cache)))


def forget_cached_globals() -> None:
    """Drop the process's decoded global adapters (tests that tamper with a store use it)."""
    with _cache_lock:
        _cache.clear()


# --- global adapters -------------------------------------------------------------------------


def write_global_adapter(
    store: ObjectStore, ident: Identity, t: int, adapter: Adapter
) -> tuple[str, str, int]:
    """Write candidate theta_t's bytes (not yet committed: no manifest); return (key, sha256, nbytes)."""
    data = encode(adapter, "float32")
    key = layout.global_adapter_key(ident.prefix, ident.experiment, t)
    _put_once(store, key, data)
    sha = sha256_hex(data)
    _remember(store.uri(key), sha, adapter)
    return key, sha, len(data)


def write_global_manifest(
    store: ObjectStore,
    ident: Identity,
    t: int,
    adapter: tuple[str, str, int],
    clients: list[str],
    strategy: str,
) -> GlobalManifest:
    """Name theta_t: the adapter (key, sha256, nbytes) it is; a refused round names theta_{t-1}'s."""
    adapter_key, sha, nbytes = adapter
    manifest = GlobalManifest(
        experiment=ident.experiment,
        round=t,
        base_model_id=ident.base_model_id,
        base_revision=ident.base_revision,
        adapter_config_hash=ident.adapter_config_hash,
        sha256=sha,
        nbytes=nbytes,
        adapter_key=adapter_key,
        parent_key=layout.global_adapter_key(ident.prefix, ident.experiment, t - 1) if t > 0 else None,
        clients=clients,
        strategy=strategy,
    )
    mkey = layout.global_manifest_key(ident.prefix, ident.experiment, t)
    if store.exists(mkey):
        # A retry after the manifest was written: keep the committed one.
        return read_global_manifest(store, ident, t)
    put_json(store, mkey, manifest.model_dump(mode="json"))
    return manifest


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


def read_adapter(store: ObjectStore, key: str, sha256: str, nbytes: int | None = None) -> Adapter:
    """The adapter stored under ``key`` with this sha256 (decoded once per process)."""
    uri = store.uri(key)
    with _cache_lock:
        cached = _cache.get((uri, sha256))
    if cached is not None:
        return dict(cached)  # the tensors are shared and never modified in place
    global decoded_globals
    data = store.get_bytes(key, max_bytes=nbytes)
    check_sha256(data, sha256, uri)
    adapter, _ = decode(data)
    decoded_globals += 1
    _remember(uri, sha256, adapter)
    return dict(adapter)


def read_global(store: ObjectStore, ident: Identity, t: int) -> Adapter:
    """theta_t, verified against its manifest's sha256."""
    manifest = read_global_manifest(store, ident, t)
    return read_adapter(store, manifest.adapter_key, manifest.sha256, manifest.nbytes)


# --- client deltas ----------------------------------------------------------------------------


def write_client_delta(
    store: ObjectStore, ident: Identity, t: int, delta: Adapter, stats: ClientStats, encoding: Encoding
) -> ClientManifest:
    """Upload a client's delta for round t (from theta_{t-1}) and its manifest; return the manifest."""
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
        return committed
    _put_once(store, key, data)
    put_json(store, mkey, manifest.model_dump(mode="json"))
    return manifest


def expected_update(
    ident: Identity, t: int, client_id: str, global_adapter: Adapter, encoding: Encoding
) -> Expected:
    """What the coordinator expects of owner ``client_id``'s manifest for round t."""
    return Expected(
        experiment=ident.experiment,
        round=t,
        client_id=client_id,
        base_model_id=ident.base_model_id,
        base_revision=ident.base_revision,
        adapter_config_hash=ident.adapter_config_hash,
        delta_key=layout.client_delta_key(ident.prefix, ident.experiment, client_id, t),
        encoding=encoding,
        nbytes=expected_delta_nbytes(global_adapter, encoding),
    )


def read_client_delta(
    store: ObjectStore, ident: Identity, expected: Expected
) -> tuple[Adapter, ClientManifest]:
    """An owner's delta after its manifest's checks (before any byte of it is read) and sha256."""
    cid, t = expected.client_id, expected.round
    mkey = layout.client_manifest_key(ident.prefix, ident.experiment, cid, t)
    try:
        # A manifest is a few KB; a larger one is refused unread.
        raw = store.get_bytes(mkey, max_bytes=1 << 20)
    except ObjectNotFoundError as err:
        raise DeltaValidationError("manifest", f"client {cid} uploaded no manifest for round {t}") from err
    except ObjectTooLargeError as err:
        raise DeltaValidationError("size", f"client {cid}: {err}") from err
    try:
        # Not JSON, or not a manifest: pydantic reports both as a ValidationError (a ValueError).
        manifest = ClientManifest.model_validate_json(raw)
    except ValueError as err:
        raise DeltaValidationError(
            "manifest",
            f"client {cid}: malformed manifest {store.uri(mkey)}: {err}; upload the manifest "
            "that fgrpo writes (fgrpo_io.exchange.write_client_delta)",
        ) from err
    check_envelope(manifest, expected)
    try:
        data = store.get_bytes(manifest.delta_key, max_bytes=expected.nbytes)
    except ObjectNotFoundError as err:
        raise DeltaValidationError(
            "manifest",
            f"client {cid}: its manifest points at {store.uri(manifest.delta_key)}, which does "
            "not exist; upload the delta before its manifest",
        ) from err
    except ObjectTooLargeError as err:
        raise DeltaValidationError("size", f"client {cid}: {err}") from err
    check_sha256(data, manifest.sha256, store.uri(manifest.delta_key))
    delta, _ = decode(data)
    return delta, manifest


# --- round results and server state -----------------------------------------------------------


def write_round_result(store: ObjectStore, ident: Identity, result: RoundResult) -> str:
    """Write round t's result once (rows, evaluation, gate decision), just before its state."""
    key = layout.round_result_key(ident.prefix, ident.experiment, result.round)
    _put_json_once(store, key, result.model_dump(mode="json"))
    return key


def read_round_result(store: ObjectStore, ident: Identity, t: int) -> RoundResult:
    return RoundResult.model_validate(
        get_json(store, layout.round_result_key(ident.prefix, ident.experiment, t))
    )


def write_state(store: ObjectStore, ident: Identity, state: ServerState) -> str:
    """Commit the server state after round ``state.round``: the round's commit marker."""
    key = layout.state_key(ident.prefix, ident.experiment, state.round)
    _put_json_once(store, key, state.model_dump(mode="json"))
    return key


def read_state(store: ObjectStore, ident: Identity, t: int) -> ServerState:
    return ServerState.model_validate(get_json(store, layout.state_key(ident.prefix, ident.experiment, t)))
