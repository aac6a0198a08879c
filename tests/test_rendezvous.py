"""The store-side protocol of warm owners: an owner's wait for a round, the coordinator's for deliveries."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fgrpo_io import layout, rendezvous
from fgrpo_io.exchange import Identity
from fgrpo_io.rendezvous import RoundWaitError, SessionReport
from fgrpo_io.store import LocalStore, StoreError

IDENT = Identity(
    prefix="fgrpo", experiment="exp", base_model_id="tiny", base_revision="r", adapter_config_hash="h"
)
SESSION = "0123456789abcdef"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _commit_head(store: LocalStore, t: int) -> None:
    store.put_bytes(layout.global_manifest_key("fgrpo", "exp", t), b"{}")


def test_owner_wait_answers_ready_closed_or_stopped(store: LocalStore) -> None:
    # Prepare: theta_1 committed; round 3 closed; then the session stopped.
    _commit_head(store, 1)
    rendezvous.close_round(store, IDENT, SESSION, 3)
    # Execute / Assert: round 2 may start; round 3 is skipped; once stopped, every round says so.
    assert rendezvous.wait_for_round(store, IDENT, SESSION, 2, timeout_s=1) == "ready"
    assert rendezvous.wait_for_round(store, IDENT, SESSION, 3, timeout_s=1) == "closed"
    rendezvous.stop(store, IDENT, SESSION, "experiment finished")
    assert rendezvous.wait_for_round(store, IDENT, SESSION, 2, timeout_s=1) == "stopped"
    # Another session's markers are not this one's.
    assert rendezvous.wait_for_round(store, IDENT, "fedcba9876543210", 2, timeout_s=1) == "ready"


def test_owner_wait_gives_up_with_a_message_when_no_round_comes(store: LocalStore) -> None:
    # Execute / Assert
    started = time.monotonic()
    with pytest.raises(RoundWaitError, match="no global adapter of round 4"):
        rendezvous.wait_for_round(store, IDENT, SESSION, 5, timeout_s=0.3)
    assert time.monotonic() - started < 2


def test_coordinator_wait_sorts_every_owner_out(store: LocalStore) -> None:
    # Prepare: a delivered, b noted a failure, c's run ended, d never answers.
    store.put_bytes(layout.client_manifest_key("fgrpo", "exp", "owner-a", 2), b"{}")
    rendezvous.write_failure(store, IDENT, "owner-b", 2, "ConfigError: data_path missing")
    asked: list[list[str]] = []

    def gone(pending: list[str]) -> dict[str, str]:
        asked.append(pending)
        return {"owner-c": "client flow run c ended Crashed"} if "owner-c" in pending else {}

    owners = ["owner-d", "owner-c", "owner-b", "owner-a"]
    # Execute
    started = time.monotonic()
    delivered, failed = rendezvous.wait_deliveries(store, IDENT, 2, owners, 0.5, gone)
    elapsed = time.monotonic() - started
    # Assert: nobody blocks the round past its deadline; each reason says what happened.
    assert delivered == ["owner-a"]
    assert failed == {
        "owner-b": "client failed: ConfigError: data_path missing",
        "owner-c": "client flow run c ended Crashed",
        "owner-d": "no delta within round_timeout_s=0.5",
    }
    assert 0.5 <= elapsed < 2
    assert asked[0] == ["owner-d", "owner-c"]


def test_coordinator_wait_ends_as_soon_as_all_delivered(store: LocalStore) -> None:
    # Prepare
    for owner in ("owner-a", "owner-b"):
        store.put_bytes(layout.client_manifest_key("fgrpo", "exp", owner, 1), b"{}")
    # Execute
    started = time.monotonic()
    delivered, failed = rendezvous.wait_deliveries(store, IDENT, 1, ["owner-a", "owner-b"], 60, lambda p: {})
    # Assert
    assert (delivered, failed) == (["owner-a", "owner-b"], {})
    assert time.monotonic() - started < 1


def test_session_report_round_trips_and_session_ids_are_checked(store: LocalStore) -> None:
    # Prepare
    report = SessionReport(client_id="owner-a", session=SESSION, trained=[1, 2], skipped=[3], model_loads=1)
    # Execute
    key = rendezvous.write_report(store, IDENT, report)
    # Assert
    assert key == f"fgrpo/exp/clients/owner-a/sessions/{SESSION}.json"
    assert rendezvous.read_report(store, IDENT, "owner-a", SESSION) == report
    assert rendezvous.read_report(store, IDENT, "owner-b", SESSION) is None
    with pytest.raises(StoreError, match="session id"):
        layout.stop_key("fgrpo", "exp", "../other")
