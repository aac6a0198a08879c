"""Warm owners and the coordinator meet in the store: markers, waits and owner notes (no Prefect).

One owner session is one experiment invocation's set of warm owner runs (flows/owner_sessions.py).
The coordinator writes round t's *closed* marker when it stops waiting for round t and the *stop*
marker when the experiment ends or fails; an owner stops training round t at either
(``RoundWatch``), writes a *failure note* when its round t failed and a *session report* when it
exits. Both sides poll: the store is the one channel they share (an owner's credentials read
global/ and write its own clients/<owner>/ prefix, no more).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fgrpo_core.errors import RoundClosedError
from fgrpo_io import layout
from fgrpo_io.exchange import Identity
from fgrpo_io.failures import MAX_FAILURE_BYTES, read_owner_failure
from fgrpo_io.store import (
    ObjectNotFoundError,
    ObjectStore,
    ObjectTooLargeError,
    StoreError,
    get_json,
    put_json,
)

# The polls for theta_{t-1} (owner) and for manifests (coordinator) add their delay to every
# round, so they are short; the rarer events (a marker, a failure note, a run that ended) are
# asked for once a second.
OWNER_POLL_S = 0.2
COORDINATOR_POLL_S = 0.2
MARKER_POLL_S = 1.0
# How often the coordinator asks Prefect whether an owner's run has ended without delivering.
RUN_STATE_POLL_S = 1.0

Readiness = Literal["ready", "closed", "stopped"]
# Owners still pending -> {owner: why it will not deliver}, for those whose run has ended.
GoneCheck = Callable[[list[str]], dict[str, str]]
logger = logging.getLogger(__name__)


class RoundWaitError(StoreError):
    """An owner waited longer than it may for the coordinator's global adapter."""


class SessionReport(BaseModel):
    """What one warm owner run did; written under the owner's prefix when it exits."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(description="The owner this run trained.")
    session: str = Field(description="The coordinator's owner-session id.")
    flow_run_id: str | None = Field(default=None, description="The owner's Prefect flow run, if any.")
    trained: list[int] = Field(default_factory=list, description="Rounds this run delivered a delta for.")
    skipped: list[int] = Field(
        default_factory=list, description="Rounds the coordinator had closed before this run began them."
    )
    # Kept apart from `skipped`: these rounds cost the owner part of a training, so a
    # round_timeout_s too short for this owner shows here. Neither list is a failure of the
    # owner (no `failed` entry, no note): the coordinator has recorded the round as late.
    cancelled: list[int] = Field(
        default_factory=list,
        description="Rounds the coordinator closed (or the session stopped) while this run trained "
        "them: training stopped there, nothing was uploaded.",
    )
    failed: dict[int, str] = Field(default_factory=dict, description="Rounds whose training failed: why.")
    stopped: bool = Field(default=False, description="True when the coordinator's stop marker ended it.")
    model_loads: int = Field(default=0, ge=0, description="Base-model loads of this run's process.")


def close_round(store: ObjectStore, ident: Identity, session: str, t: int) -> None:
    """The coordinator stops waiting for round t: an owner skips it, or stops training it."""
    put_json(store, layout.round_closed_key(ident.prefix, ident.experiment, session, t), {"round": t}, True)


def stop(store: ObjectStore, ident: Identity, session: str, reason: str) -> None:
    """Every owner run of the session exits at its next wait."""
    put_json(store, layout.stop_key(ident.prefix, ident.experiment, session), {"reason": reason}, True)


def wait_for_round(store: ObjectStore, ident: Identity, session: str, t: int, timeout_s: float) -> Readiness:
    """Until theta_{t-1} is committed ("ready"), round t is closed, or the session is stopped.

    Raises RoundWaitError after ``timeout_s``: the coordinator is gone or stuck.
    """
    stop_key = layout.stop_key(ident.prefix, ident.experiment, session)
    closed_key = layout.round_closed_key(ident.prefix, ident.experiment, session, t)
    head_key = layout.global_manifest_key(ident.prefix, ident.experiment, t - 1)
    deadline = time.monotonic() + timeout_s
    next_marker_check = time.monotonic()
    while True:
        ready = store.exists(head_key)
        # The markers once a second while waiting (and once when ready): fewer requests a poll.
        if ready or time.monotonic() >= next_marker_check:
            if store.exists(stop_key):
                return "stopped"
            if store.exists(closed_key):
                return "closed"
            next_marker_check = time.monotonic() + MARKER_POLL_S
        if ready:
            return "ready"
        if time.monotonic() > deadline:
            raise RoundWaitError(
                f"no global adapter of round {t - 1} at {store.uri(head_key)} after {timeout_s:g} s, "
                "and no stop marker: is the coordinator's experiment still running? "
                "(federation.round_timeout_s bounds this wait)"
            )
        time.sleep(OWNER_POLL_S)


class RoundWatch:
    """While an owner trains round t: has the coordinator closed round t or stopped the session?

    ``poll()`` is called at every training step and asks the store at most once per ``every_s``
    (two small reads); ``check()`` asks now. Either raises RoundClosedError at a marker. A store
    error in a check is logged and the training goes on: the next check asks again, and a
    missed marker costs a late upload the coordinator ignores, not a lost round.
    """

    def __init__(
        self, store: ObjectStore, ident: Identity, session: str, t: int, every_s: float = MARKER_POLL_S
    ) -> None:
        self.store, self.t, self.every_s = store, t, every_s
        self.keys = {
            "stopped": layout.stop_key(ident.prefix, ident.experiment, session),
            "closed": layout.round_closed_key(ident.prefix, ident.experiment, session, t),
        }
        self.next_check = time.monotonic()

    def poll(self) -> None:
        if time.monotonic() >= self.next_check:
            self.check()

    def check(self) -> None:
        self.next_check = time.monotonic() + self.every_s
        for marker, key in self.keys.items():
            try:
                found = self.store.exists(key)
            except StoreError as err:
                logger.warning("round %d: could not read %s (%s); training goes on", self.t, key, err)
                return
            if found:
                why = "the session was stopped" if marker == "stopped" else "the coordinator closed it"
                raise RoundClosedError(
                    self.t,
                    marker,
                    f"round {self.t}: {why} ({self.store.uri(key)}) while this owner trained it",
                )


def write_failure(store: ObjectStore, ident: Identity, client: str, t: int, reason: str) -> None:
    key = layout.client_failure_note_key(ident.prefix, ident.experiment, client, t)
    put_json(store, key, {"round": t, "reason": reason}, True)


def read_failure(store: ObjectStore, ident: Identity, client: str, t: int) -> str | None:
    """Why the owner's round t failed, None when it left no word: its permanent failure record
    (the row's `permanent: kind: ...` reason) or its note, each read no further than a note's size."""
    recorded = read_owner_failure(store, ident, t, client)
    if recorded is not None:
        return recorded.reason
    key = layout.client_failure_note_key(ident.prefix, ident.experiment, client, t)
    try:
        note = json.loads(store.get_bytes(key, max_bytes=MAX_FAILURE_BYTES))
    except (ObjectNotFoundError, ObjectTooLargeError, ValueError):
        return None
    return f"client failed: {note['reason']}" if isinstance(note, dict) and "reason" in note else None


def write_report(store: ObjectStore, ident: Identity, report: SessionReport) -> str:
    key = layout.owner_session_key(ident.prefix, ident.experiment, report.client_id, report.session)
    put_json(store, key, report, True)
    return key


def read_report(store: ObjectStore, ident: Identity, client: str, session: str) -> SessionReport | None:
    key = layout.owner_session_key(ident.prefix, ident.experiment, client, session)
    return SessionReport.model_validate(get_json(store, key)) if store.exists(key) else None


def wait_deliveries(
    store: ObjectStore, ident: Identity, t: int, owners: list[str], timeout_s: float, gone: GoneCheck
) -> tuple[list[str], dict[str, str]]:
    """(owners that delivered round t, {owner that did not: why}) once none is pending.

    An owner stops being pending when its manifest exists, when it left a failure note, when
    ``gone`` says its run ended, or at the deadline (``timeout_s`` from now).
    """
    deadline = time.monotonic() + timeout_s
    next_state_check = time.monotonic()
    delivered: list[str] = []
    failed: dict[str, str] = {}
    pending = list(owners)

    def arrived(client: str) -> bool:
        return store.exists(layout.client_manifest_key(ident.prefix, ident.experiment, client, t))

    while pending:
        for client in [c for c in pending if arrived(c)]:
            pending.remove(client)
            delivered.append(client)
        now = time.monotonic()
        if not pending or now >= deadline:
            break
        if now >= next_state_check:
            for client in list(pending):
                if (why := read_failure(store, ident, client, t)) is not None:
                    pending.remove(client)
                    failed[client] = why
            for client, why in gone(list(pending)).items():
                pending.remove(client)
                # Delivered just before its run ended (its last round): not a failure.
                if arrived(client):
                    delivered.append(client)
                else:
                    failed[client] = why
            next_state_check = now + RUN_STATE_POLL_S
        time.sleep(COORDINATOR_POLL_S)
    for client in pending:
        failed[client] = f"no delta within round_timeout_s={timeout_s:g}"
    order = {c: i for i, c in enumerate(owners)}
    return sorted(delivered, key=order.__getitem__), failed
