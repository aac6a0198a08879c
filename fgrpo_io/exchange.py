"""Reading and writing adapters, deltas, manifests, round results and server state in the store.

Objects are written before their manifest, and a manifest is the commit marker: a reader trusts
nothing without one and checks the object's sha256 against it (SPEC §5, §7). No write overwrites a
committed object. A global adapter is decoded at most once per process: what this process wrote
or read is kept (the last few rounds) and served again without touching the store's bytes.
"""

from __future__ import annotations

import threading

from fgrpo_core.deltas import Encoding, decode, encode
from fgrpo_core.downlink import apply_step
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.manifest import GlobalManifest, check_sha256, sha256_hex
from fgrpo_core.types import Adapter, GlobalStep, RoundResult, ServerState
from fgrpo_io import layout
from fgrpo_io.objects import ConflictError, Identity, identity, put_json_once, put_once
from fgrpo_io.store import ObjectStore, get_json, put_json
from fgrpo_io.uploads import (
    expected_update,
    read_client_delta,
    read_client_manifest,
    read_delta,
    write_client_delta,
)

# One module for callers: the identity and the owners' uploads are re-exported from here.
__all__ = [
    "ConflictError",
    "Identity",
    "expected_update",
    "identity",
    "read_client_delta",
    "read_client_manifest",
    "read_delta",
    "write_client_delta",
]

_CACHE_ROUNDS = 3
_cache_lock = threading.Lock()
_cache: dict[tuple[str, str], Adapter] = {}  # (adapter URI, sha256) -> theta_t
# How many global adapters this process decoded from the store's bytes, and how many bytes of
# global adapters and steps it downloaded (tests and benchmarks read them).
decoded_globals = 0
downloaded_global_bytes = 0


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
    put_once(store, key, data)
    sha = sha256_hex(data)
    _remember(store.uri(key), sha, adapter)
    return key, sha, len(data)


def write_global_step(
    store: ObjectStore, ident: Identity, t: int, parent: tuple[str, str], data: bytes, encoding: Encoding
) -> GlobalStep:
    """Write the encoded step from theta_{t-1} (``parent``: key, sha256) to candidate theta_t."""
    key = layout.global_step_key(ident.prefix, ident.experiment, t)
    put_once(store, key, data)
    return GlobalStep(
        key=key,
        sha256=sha256_hex(data),
        nbytes=len(data),
        encoding=encoding,  # type: ignore[arg-type]  # float32 writes no step
        parent_key=parent[0],
        parent_sha256=parent[1],
    )


def write_global_manifest(
    store: ObjectStore,
    ident: Identity,
    t: int,
    adapter: tuple[str, str, int],
    clients: list[str],
    strategy: str,
    step: GlobalStep | None = None,
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
        step=step,
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
    global decoded_globals, downloaded_global_bytes
    data = store.get_bytes(key, max_bytes=nbytes)
    downloaded_global_bytes += len(data)
    check_sha256(data, sha256, uri)
    adapter, _ = decode(data)
    decoded_globals += 1
    _remember(uri, sha256, adapter)
    return dict(adapter)


def _cached(uri: str, sha256: str) -> Adapter | None:
    with _cache_lock:
        cached = _cache.get((uri, sha256))
    return dict(cached) if cached is not None else None


def _read_step(store: ObjectStore, manifest: GlobalManifest) -> Adapter | None:
    """theta_t from the step, when this process holds the step's parent; else None."""
    step = manifest.step
    parent = _cached(store.uri(step.parent_key), step.parent_sha256) if step is not None else None
    if step is None or parent is None:
        return None
    global downloaded_global_bytes
    data = store.get_bytes(step.key, max_bytes=step.nbytes)
    downloaded_global_bytes += len(data)
    check_sha256(data, step.sha256, store.uri(step.key))
    # The coordinator computed theta_t by this same add on the same bytes: the same bits as the
    # float32 adapter under manifest.sha256 (tests/test_downlink.py), so it is cached under it.
    adapter = apply_step(parent, data)
    _remember(store.uri(manifest.adapter_key), manifest.sha256, adapter)
    return dict(adapter)


def read_global(store: ObjectStore, ident: Identity, t: int) -> Adapter:
    """theta_t, verified against its manifest's sha256 (from the step when theta_{t-1} is held)."""
    manifest = read_global_manifest(store, ident, t)
    cached = _cached(store.uri(manifest.adapter_key), manifest.sha256)
    if cached is not None:
        return cached
    from_step = _read_step(store, manifest)
    if from_step is not None:
        return from_step
    return read_adapter(store, manifest.adapter_key, manifest.sha256, manifest.nbytes)


# --- round results and server state -----------------------------------------------------------


def write_round_result(store: ObjectStore, ident: Identity, result: RoundResult) -> str:
    """Write round t's result once (rows, evaluation, gate decision), just before its state."""
    key = layout.round_result_key(ident.prefix, ident.experiment, result.round)
    put_json_once(store, key, result.model_dump(mode="json"))
    return key


def read_round_result(store: ObjectStore, ident: Identity, t: int) -> RoundResult:
    return RoundResult.model_validate(
        get_json(store, layout.round_result_key(ident.prefix, ident.experiment, t))
    )


def write_state(store: ObjectStore, ident: Identity, state: ServerState) -> str:
    """Commit the server state after round ``state.round``: the round's commit marker."""
    key = layout.state_key(ident.prefix, ident.experiment, state.round)
    put_json_once(store, key, state.model_dump(mode="json"))
    return key


def read_state(store: ObjectStore, ident: Identity, t: int) -> ServerState:
    return ServerState.model_validate(get_json(store, layout.state_key(ident.prefix, ident.experiment, t)))
