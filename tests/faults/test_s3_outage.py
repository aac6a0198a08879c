"""An S3 outage mid-round, carried by the client task's retries (through the Prefect flows)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fgrpo_core.config import parse_config
from fgrpo_core.deltas import encode
from fgrpo_core.manifest import sha256_hex
from fgrpo_io import exchange
from fgrpo_io.ledger import Ledger
from fgrpo_io.s3_store import S3Store, s3_client
from tests import fault_hooks
from tests.conftest import tiny_config
from tests.faults.shared import (
    CLIENTS,
    Round1,
)
from tests.s3_server import TEST_REGION, point_aws_env_at

pytestmark = [pytest.mark.slow]


@dataclass
class FlakyS3:
    """A moto S3 server on a fixed port of 127.0.0.1 that can refuse connections for a while."""

    port: int
    server: Any
    events: dict[str, float] = field(default_factory=dict)
    restart: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def outage(self, seconds: float) -> None:
        """Stop the server now (connections are refused) and start a new one ``seconds`` later."""
        from moto.server import ThreadedMotoServer

        self.server.stop()
        self.events["down"] = time.time()
        with socket.socket() as sock:
            self.events["refused"] = float(sock.connect_ex(("127.0.0.1", self.port)) != 0)

        def come_back() -> None:
            time.sleep(seconds)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            server.start()  # moto keeps its buckets in this process: the data is still there
            self.server = server
            self.events["up"] = time.time()

        self.restart = threading.Thread(target=come_back, daemon=True)
        self.restart.start()


@pytest.fixture
def flaky_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[FlakyS3]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    flaky = FlakyS3(port=int(server.get_host_and_port()[1]), server=server)
    point_aws_env_at(monkeypatch, flaky.endpoint)
    s3_client(flaky.endpoint, TEST_REGION).create_bucket(Bucket="fgrpo-flaky")
    try:
        yield flaky
    finally:
        if flaky.restart is not None:
            flaky.restart.join(timeout=30)
        flaky.server.stop()


def test_s3_outage_mid_round_is_carried_by_retries(
    round1: Round1, tmp_path: Path, prefect_harness: None, flaky_s3: FlakyS3
) -> None:
    # Prepare: S3 on a server that goes away for 4 s right before owner-a uploads (its last
    # evaluation): shorter than the client task's retry delay (5 s), longer than boto3's retries.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        TaskRunFilter,
        TaskRunFilterName,
    )

    from flows.experiment import run_experiment

    raw = tiny_config(Path(round1.cfg.model.cache_dir), tmp_path)
    raw["name"] = "tiny-outage"
    raw["clients"][0]["reward"] = "tests.fault_hooks.outage_exact"
    raw["clients"][0]["reward_range"] = [0.0, 1.0]  # the exact reward it wraps
    raw["federation"] = {"rounds": 1, "min_clients": 3}
    raw["store"] = {"kind": "s3", "bucket": "fgrpo-flaky", "prefix": "fgrpo"}
    raw["tracking"] = {"enabled": False}
    cfg = parse_config(raw)
    fault_hooks.arm_outage(lambda: flaky_s3.outage(4.0))
    # Execute
    summary = run_experiment(cfg).model_dump(mode="json")
    # Assert: the outage happened (connections refused) while owner-a was about to upload; its
    # task ran twice; all three deltas made it; the global is bit-identical to the core's round.
    assert flaky_s3.events["refused"] == 1.0 and flaky_s3.events["up"] - flaky_s3.events["down"] >= 4.0
    store = S3Store("fgrpo-flaky", endpoint_url=flaky_s3.endpoint)
    ident = exchange.identity(cfg)
    manifest = Ledger(cfg, store).delivered(1, "owner-a")
    assert (
        manifest is not None
        and datetime.fromisoformat(manifest.created_at).timestamp() > flaky_s3.events["up"]
    )
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["tiny-outage-round-0001"])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="train-%")),
        )
    runs = {t.name: t.run_count for t in task_runs}
    assert runs == {"train-owner-a-round-1": 2, "train-owner-b-round-1": 1, "train-owner-c-round-1": 1}
    rows = summary["rounds"][0]["rows"]
    assert [r["client_id"] for r in rows if r["accepted"]] == list(CLIENTS)
    global_manifest = exchange.read_global_manifest(store, ident, 1)
    assert global_manifest.sha256 == sha256_hex(encode(round1.outcome.adapter))
