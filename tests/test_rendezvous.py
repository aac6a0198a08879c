"""The store-side protocol of warm owners: an owner's wait for a round, the coordinator's for deliveries."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from prefect.states import Failed

from fgrpo_core.errors import RoundClosedError
from fgrpo_io import layout, rendezvous
from fgrpo_io.exchange import Identity
from fgrpo_io.rendezvous import RoundWaitError, RoundWatch, SessionReport
from fgrpo_io.store import LocalStore, StoreError, StoreUnavailableError
from tasks.retry import is_transient

IDENT = Identity(
    prefix="fgrpo", experiment="exp", base_model_id="tiny", base_revision="r", adapter_config_hash="h"
)
SESSION = "0123456789abcdef"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


class CountingStore(LocalStore):
    """A local store that counts its existence checks and can be made unreachable."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.exists_calls = 0
        self.down = False

    def exists(self, key: str) -> bool:
        self.exists_calls += 1
        if self.down:
            raise StoreUnavailableError("store unreachable")
        return super().exists(key)


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


def test_round_watch_asks_the_store_once_a_period_and_raises_at_a_marker(tmp_path: Path) -> None:
    # Prepare: a watch of round 3 asking at most every 0.3 s; round 2's marker is not round 3's.
    store = CountingStore(tmp_path / "store")
    watch = RoundWatch(store, IDENT, SESSION, 3, every_s=0.3)
    rendezvous.close_round(store, IDENT, SESSION, 2)
    # Execute / Assert: many polls (training steps) inside one period ask once (two markers).
    for _ in range(1000):
        watch.poll()
    assert store.exists_calls == 2
    rendezvous.close_round(store, IDENT, SESSION, 3)
    watch.poll()  # round 3 is closed now, but the period has not passed
    assert store.exists_calls == 2
    time.sleep(0.3)
    with pytest.raises(RoundClosedError, match="round 3: the coordinator closed it") as closed:
        watch.poll()
    assert (closed.value.round_idx, closed.value.marker) == (3, "closed")
    assert store.uri(layout.round_closed_key("fgrpo", "exp", SESSION, 3)) in str(closed.value)
    # The check before an upload asks at once; a stopped session stops every round.
    rendezvous.stop(store, IDENT, SESSION, "experiment failed")
    with pytest.raises(RoundClosedError, match="the session was stopped") as stopped:
        RoundWatch(store, IDENT, SESSION, 4, every_s=60).check()
    assert stopped.value.marker == "stopped"
    # Not an I/O error: the train task's retry policy would not retry it.
    assert not is_transient(None, None, Failed(data=closed.value))


def test_round_watch_keeps_training_through_a_store_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: round 1 closed, but the store does not answer.
    store = CountingStore(tmp_path / "store")
    rendezvous.close_round(store, IDENT, SESSION, 1)
    store.down = True
    watch = RoundWatch(store, IDENT, SESSION, 1, every_s=0.0)
    # Execute / Assert: the outage is logged and training goes on; the next answer stops it.
    with caplog.at_level(logging.WARNING, logger="fgrpo_io.rendezvous"):
        watch.poll()
    assert "could not read" in caplog.text and "training goes on" in caplog.text
    store.down = False
    with pytest.raises(RoundClosedError):
        watch.poll()
