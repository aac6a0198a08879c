"""An owner's permanent failure in the store: written by the owner, read by the coordinator."""

from __future__ import annotations

from fgrpo_core.owner_failure import OwnerFailure
from fgrpo_io import layout
from fgrpo_io.exchange import Identity
from fgrpo_io.store import ObjectNotFoundError, ObjectStore, ObjectTooLargeError, put_json

# A failure record is a few lines of JSON; an owner's larger upload under that key is not one.
MAX_FAILURE_BYTES = 16_384


def write_owner_failure(store: ObjectStore, ident: Identity, failure: OwnerFailure) -> str:
    """Record that an owner cannot run round t, under its own prefix (a rerun of the round replaces it)."""
    key = layout.client_failure_key(ident.prefix, ident.experiment, failure.client_id, failure.round)
    put_json(store, key, failure, overwrite=True)
    return key


def read_owner_failure(store: ObjectStore, ident: Identity, t: int, client_id: str) -> OwnerFailure | None:
    """The owner's record of a permanent failure in round t; None if it wrote none (or a bad one).

    The owner wrote it, so it is trusted for nothing but its own row: it must name this owner
    and this round.
    """
    key = layout.client_failure_key(ident.prefix, ident.experiment, client_id, t)
    try:
        failure = OwnerFailure.model_validate_json(store.get_bytes(key, max_bytes=MAX_FAILURE_BYTES))
    except (ObjectNotFoundError, ObjectTooLargeError, ValueError):
        return None
    return failure if (failure.client_id, failure.round) == (client_id, t) else None
