"""The coordinator lease: one holder at a time, on the local store and on a real S3 server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from fgrpo_io import layout, lease
from fgrpo_io.exchange import Identity
from fgrpo_io.s3_store import S3Store
from fgrpo_io.store import LocalStore, ObjectStore

IDENT = Identity(
    prefix="fgrpo", experiment="leased", base_model_id="m", base_revision="r", adapter_config_hash="h"
)


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A live process of this host that is not the test (another coordinator)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _held_by(store: ObjectStore, pid: int, expires_in: float) -> lease.Lease:
    """Write generation 1 as if the process ``pid`` of this host had taken the lease."""
    import psutil

    taken = lease.take(store, IDENT, ttl_s=expires_in)
    forged = taken.model_copy(
        update={
            "generation": 2,
            "holder": "other",
            "pid": pid,
            "pid_started": psutil.Process(pid).create_time(),
        }
    )
    lease._write(store, IDENT, forged)
    return forged


def test_a_second_coordinator_is_refused_while_the_holder_lives(tmp_path: Path, live_pid: int) -> None:
    # Prepare
    store = LocalStore(tmp_path)
    _held_by(store, live_pid, expires_in=600.0)
    # Execute / Assert: the message names the holder and what to do
    with pytest.raises(lease.LeaseHeldError, match=rf"pid {live_pid}.*wait for it to finish"):
        lease.take(store, IDENT, ttl_s=600.0)


def test_a_dead_or_expired_or_released_holder_frees_the_lease(tmp_path: Path, live_pid: int) -> None:
    # Prepare: a holder that died (SIGKILL), then one that expired, then one that released
    store = LocalStore(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    first = lease.take(store, IDENT, ttl_s=600.0)
    lease._write(store, IDENT, first.model_copy(update={"generation": 2, "holder": "x", "pid": dead.pid}))
    # Execute / Assert
    second = lease.take(store, IDENT, ttl_s=600.0)
    assert second.generation == 3
    lease._write(
        store,
        IDENT,
        second.model_copy(
            update={"generation": 4, "holder": "y", "pid": live_pid, "expires": time.time() - 1}
        ),
    )
    third = lease.take(store, IDENT, ttl_s=600.0)
    lease.release(store, IDENT, third)
    fourth = lease.take(store, IDENT, ttl_s=600.0)
    assert (third.generation, fourth.generation) == (5, 7)


def test_renewing_a_lease_taken_over_stops_the_old_coordinator(tmp_path: Path) -> None:
    # Prepare: the holder's lease expired and another coordinator took it
    store = LocalStore(tmp_path)
    old = lease.take(store, IDENT, ttl_s=600.0)
    lease._write(store, IDENT, old.model_copy(update={"generation": 2, "expires": time.time() - 1}))
    new = lease.take(store, IDENT, ttl_s=600.0)
    # Execute / Assert: the old one must stop; its release leaves the new holder alone
    with pytest.raises(lease.LeaseLostError, match="lease is gone"):
        lease.renew(store, IDENT, old, ttl_s=600.0)
    lease.release(store, IDENT, old)
    assert lease.renew(store, IDENT, new, ttl_s=600.0).holder == new.holder


def test_two_coordinators_racing_on_s3_get_exactly_one_lease(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a real S3 server; both see the same free newest generation
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    ).create_bucket(Bucket="lease-race")
    store = S3Store("lease-race", endpoint_url=s3_endpoint, region="us-east-1")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []
    real_newest = lease._newest

    def newest_then_wait(s: ObjectStore, i: Identity) -> lease.Lease | None:
        found = real_newest(s, i)
        barrier.wait(timeout=10)  # both have read "free" before either writes
        return found

    monkeypatch.setattr(lease, "_newest", newest_then_wait)

    def contend() -> None:
        try:
            lease.take(store, IDENT, ttl_s=600.0)
            outcomes.append("took")
        except lease.LeaseHeldError as err:
            outcomes.append(str(err))

    # Execute
    threads = [threading.Thread(target=contend) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # Assert: one lease, one clear refusal, one generation in the store
    assert sorted(o == "took" for o in outcomes) == [False, True]
    assert any("same moment" in o for o in outcomes)
    assert store.list_keys(layout.lease_prefix(IDENT.prefix, IDENT.experiment)) == [
        layout.lease_key(IDENT.prefix, IDENT.experiment, 1)
    ]
