"""Prefect settings of the flows run from this process (``fgrpo run``, the benchmarks, tests).

Everything here applies to Prefect's ephemeral API only (no ``PREFECT_API_URL``): a local
server process that lives and dies with this one, which nothing else reads and no UI shows.
Against a real server (``fgrpo stack``) Prefect's defaults stay.
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Task-run events the ephemeral API's recorder writes per transaction (Prefect's default: 1).
RECORDER_BATCH = 100
# Events its persister holds before it writes them at once (Prefect's default: 20; it also writes
# every 5 s). A round ends in a burst of events, so a batch of 20 was written just as the next
# round's subflow was created: a write between that request's read and its write makes SQLite
# refuse it (SQLITE_BUSY_SNAPSHOT), the API answers 503 and Prefect's client waits 2 s. Seen in
# 1 of 6 tiny experiments with 20, none of 10 with 1000 (bench/results/overhead-notes.md).
PERSISTER_BATCH = 1000


def one_root_ca_file(folder: Path) -> Path:
    """The first root certificate of certifi's bundle, alone in a file under ``folder``.

    Every new Prefect client builds a verifying SSL context from its CA file, certifi's whole
    bundle by default (117 roots, ~15 ms; ~50 ms while training runs), even for an http:// API
    that never opens TLS (``SSL_CERT_FILE``, when set, names a bundle as big). One client is made
    per subflow (each round), so the ephemeral API's clients get this file instead (0.3 ms).
    """
    import certifi

    bundle = Path(certifi.where()).read_text(encoding="ascii")
    first = bundle[bundle.index(ssl.PEM_HEADER) : bundle.index(ssl.PEM_FOOTER) + len(ssl.PEM_FOOTER)]
    path = folder / "one-root-ca.pem"
    path.write_text(first + "\n", encoding="ascii")
    return path


@contextmanager
def flow_settings() -> Iterator[None]:
    """Prefect settings for the flows started inside this block, with the ephemeral API.

    - No flow-run heartbeats: nothing reads them, yet each flow run joins its heartbeat thread on
      exit, and that thread sleeps in 1 s steps: up to a second lost per flow run (every round).
    - The task-run recorder writes in batches: one SQLite transaction per task-run event held the
      database for ~2 s after a round's burst of events, and creating the next round's flow run
      waited for them (2 of 4 rounds, 4 s of a 30 s experiment: bench/results/overhead-notes.md).
      Set before the API starts: the ephemeral server takes these settings when it is launched.
    - Its event persister writes every 5 s, not after every 20 events (``PERSISTER_BATCH``).
    - No CSRF token round trip: the ephemeral server checks none unless told to
      (``PREFECT_SERVER_CSRF_PROTECTION_ENABLED``), yet each new client asked for one.
    - A one-root CA file for the clients (``one_root_ca_file``): every use of Prefect's CA file is
      its API's connection, here plain http and ws on the loopback, so no certificate is checked.
    """
    from prefect.settings import (
        PREFECT_API_SSL_CERT_FILE,
        PREFECT_API_URL,
        PREFECT_CLIENT_CSRF_SUPPORT_ENABLED,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_CSRF_PROTECTION_ENABLED,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        yield
        return
    recorder = "server.services.task_run_recorder"
    updates: dict[Any, Any] = {
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
        f"{recorder}.batch_size": RECORDER_BATCH,
        f"{recorder}.read_batch_size": RECORDER_BATCH,
        "server.services.event_persister.batch_size": PERSISTER_BATCH,
    }
    if not PREFECT_SERVER_CSRF_PROTECTION_ENABLED.value():
        updates[PREFECT_CLIENT_CSRF_SUPPORT_ENABLED] = False
    with tempfile.TemporaryDirectory(prefix="fgrpo-prefect-") as folder:
        updates[PREFECT_API_SSL_CERT_FILE] = str(one_root_ca_file(Path(folder)))
        with temporary_settings(updates=updates):
            yield
