"""One coordinator at a time: a lease in the store, taken by a conditional write, with an expiry.

The lease is a sequence of write-once generations (``coordinator/lease/00000001.json``, ...); the
newest one counts. Taking, renewing and releasing each write the next generation with
``put_bytes(overwrite=False)`` (S3 If-None-Match, a hard link locally), so of two coordinators
racing for the same generation exactly one succeeds. A lease is free when its newest generation
is released, expired, or held by a process of this host that no longer exists (a coordinator
killed with SIGKILL reruns at once instead of waiting for the expiry). Expiry uses wall clocks:
coordinators on several machines need clocks within a few minutes of each other.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import UTC, datetime

import psutil
from pydantic import BaseModel, ConfigDict, Field

from fgrpo_core.errors import FgrpoError
from fgrpo_io import layout
from fgrpo_io.exchange import Identity
from fgrpo_io.store import ObjectExistsError, ObjectStore, get_json, put_json


class LeaseHeldError(FgrpoError):
    """Another coordinator holds the experiment's lease."""


class LeaseLostError(FgrpoError):
    """This coordinator's lease was taken over (it expired); stop before writing anything more."""


class Lease(BaseModel):
    """One generation of the lease (also what the flow passes between its lease tasks)."""

    model_config = ConfigDict(extra="forbid")

    generation: int = Field(ge=1)
    holder: str = Field(description="Random token of the coordinator invocation that holds it.")
    host: str
    pid: int
    pid_started: float = Field(description="The holder process's start time (pid reuse guard).")
    acquired: str = Field(description="When this generation was written (UTC, ISO 8601).")
    expires: float = Field(description="Unix time after which another coordinator may take it.")
    released: bool = False


def _newest(store: ObjectStore, ident: Identity) -> Lease | None:
    keys = store.list_keys(layout.lease_prefix(ident.prefix, ident.experiment))
    return Lease.model_validate(get_json(store, keys[-1])) if keys else None


def _holder_gone(lease: Lease) -> bool:
    if lease.host != socket.gethostname():
        return False  # another machine's process: only the expiry frees it
    try:
        return abs(psutil.Process(lease.pid).create_time() - lease.pid_started) > 1.0
    except psutil.NoSuchProcess:
        return True


def _free(lease: Lease | None, now: float) -> bool:
    return lease is None or lease.released or lease.expires < now or _holder_gone(lease)


def _describe(lease: Lease) -> str:
    until = datetime.fromtimestamp(lease.expires, UTC).isoformat(timespec="seconds")
    return f"host {lease.host}, pid {lease.pid}, since {lease.acquired}, lease expires {until}"


def _write(store: ObjectStore, ident: Identity, lease: Lease) -> Lease:
    key = layout.lease_key(ident.prefix, ident.experiment, lease.generation)
    try:
        put_json(store, key, lease)
    except ObjectExistsError:
        raise LeaseHeldError(
            f"experiment {ident.experiment!r}: another coordinator took the lease at the same "
            f"moment; only one coordinator may run an experiment at a time"
        ) from None
    return lease


def _next(previous: Lease | None, holder: str, ttl_s: float, released: bool = False) -> Lease:
    now = time.time()
    me = psutil.Process(os.getpid())
    return Lease(
        generation=(previous.generation if previous else 0) + 1,
        holder=holder,
        host=socket.gethostname(),
        pid=me.pid,
        pid_started=me.create_time(),
        acquired=datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        expires=now + ttl_s,
        released=released,
    )


def take(store: ObjectStore, ident: Identity, ttl_s: float) -> Lease:
    """Take the lease for a new coordinator invocation; LeaseHeldError names the live holder."""
    newest = _newest(store, ident)
    if not _free(newest, time.time()):
        assert newest is not None
        raise LeaseHeldError(
            f"experiment {ident.experiment!r} is being run by another coordinator "
            f"({_describe(newest)}); wait for it to finish, or for the lease to expire if it died "
            f"on another machine"
        )
    return _write(store, ident, _next(newest, uuid.uuid4().hex, ttl_s))


def _mine(store: ObjectStore, ident: Identity, lease: Lease) -> Lease:
    newest = _newest(store, ident)
    if newest is None or newest.holder != lease.holder or newest.released:
        other = _describe(newest) if newest else "no lease at all"
        raise LeaseLostError(
            f"experiment {ident.experiment!r}: this coordinator's lease is gone (now: {other}); "
            f"it stopped before writing more. Rerun once the other coordinator has finished."
        )
    return newest


def renew(store: ObjectStore, ident: Identity, lease: Lease, ttl_s: float) -> Lease:
    """Extend the lease; LeaseLostError when another coordinator took it over meanwhile."""
    newest = _mine(store, ident, lease)
    try:
        return _write(store, ident, _next(newest, lease.holder, ttl_s))
    except LeaseHeldError as err:  # it expired and another coordinator won the next generation
        raise LeaseLostError(str(err)) from None


def release(store: ObjectStore, ident: Identity, lease: Lease) -> None:
    """Give the lease back (a no-op when it was already taken over)."""
    try:
        newest = _mine(store, ident, lease)
    except LeaseLostError:
        return
    _write(store, ident, _next(newest, lease.holder, 0.0, released=True))
