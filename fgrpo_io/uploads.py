"""An owner's upload: its delta's bytes and manifest, and the coordinator's reading of them.

The manifest is read and checked first (``read_client_manifest``, a few KB); the delta's bytes
only after, and as often as the streamed aggregation asks for them (``read_delta``): each read
is checked against the manifest's sha256 again.
"""

from __future__ import annotations

from fgrpo_core.deltas import Encoding, decode, encode
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.manifest import ClientManifest, check_sha256, sha256_hex
from fgrpo_core.types import Adapter, ClientStats
from fgrpo_core.update_checks import Expected, check_envelope, expected_delta_nbytes
from fgrpo_io import layout
from fgrpo_io.objects import ConflictError, Identity, put_once
from fgrpo_io.store import ObjectNotFoundError, ObjectStore, ObjectTooLargeError, get_json, put_json

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
    put_once(store, key, data)
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


def read_client_manifest(store: ObjectStore, ident: Identity, expected: Expected) -> ClientManifest:
    """An owner's manifest after its checks (before any byte of its delta is read)."""
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
    return manifest


def read_delta(store: ObjectStore, manifest: ClientManifest, expected: Expected) -> Adapter:
    """The delta a checked manifest names, read (at most ``expected.nbytes``), sha256-checked, decoded."""
    cid = manifest.client_id
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
    return delta


def read_client_delta(
    store: ObjectStore, ident: Identity, expected: Expected
) -> tuple[Adapter, ClientManifest]:
    """An owner's delta after its manifest's checks (before any byte of it is read) and sha256."""
    manifest = read_client_manifest(store, ident, expected)
    return read_delta(store, manifest, expected), manifest
