"""Faults through the Prefect flows: a crashing client, a hanging client, a round below quorum."""

from __future__ import annotations

import json
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fgrpo_core.config import parse_config
from fgrpo_core.errors import QuorumError
from fgrpo_core.manifest import sha256_hex
from fgrpo_io import exchange, layout, runtime
from fgrpo_io.ledger import Ledger
from fgrpo_io.store import LocalStore
from tests import fault_hooks
from tests.conftest import tiny_config
from tests.faults.shared import (
    Round1,
    last_committed,
    same_adapter,
)

pytestmark = [pytest.mark.slow]


# --- through the Prefect flows: crash, hang, quorum, S3 outage -------------------------------------


def _artifact_markdown(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return "\n".join(str(a.data) for a in artifacts)


@pytest.fixture(scope="module")
def crash_and_hang(
    round1: Round1, tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> dict[str, Any]:
    """One round: owner-a crashes, owner-b trains, owner-c hangs past round_timeout_s."""
    from flows.experiment import run_experiment

    out = tmp_path_factory.mktemp("faults-crash-hang")
    raw = tiny_config(Path(round1.cfg.model.cache_dir), out)
    raw["name"] = "tiny-crash-hang"
    raw["clients"][0]["reward"] = "tests.fault_hooks.crashing_exact"
    raw["clients"][0]["reward_range"] = [0.0, 1.0]  # the exact reward it wraps
    raw["clients"][2]["reward"] = "tests.fault_hooks.hanging_exact"
    raw["clients"][2]["reward_range"] = [0.0, 1.0]  # the exact reward it wraps
    # Well above an honest client's time on this machine (the round waits that long for owner-c).
    timeout = max(8.0, 3 * round1.slowest_client_s + 5)
    raw["federation"] = {"rounds": 1, "min_clients": 1, "round_timeout_s": timeout, "max_parallel_clients": 3}
    cfg = parse_config(raw)
    ident = exchange.identity(cfg)
    store = LocalStore(Path(cfg.store.root))
    # owner-c's call blocks until round 1 is committed (at most 120 s), then trains and uploads.
    fault_hooks.arm_hang(store.root / layout.global_manifest_key(ident.prefix, ident.experiment, 1), 120.0)
    # One idle model per parallel client before the round: a model loaded while owner-b trains
    # would draw from the process-wide torch RNG that TRL seeded for owner-b (order-dependent).
    with ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(runtime.borrowed_bundle(cfg))
    summary = run_experiment(cfg).model_dump(mode="json")
    return {
        "cfg": cfg,
        "summary": summary,
        "store": store,
        "ident": ident,
    }


def test_crashing_client_is_recorded_and_the_round_commits_without_it(
    round1: Round1, crash_and_hang: dict[str, Any]
) -> None:
    # Prepare
    from mlflow import MlflowClient

    cfg, report = crash_and_hang["cfg"], crash_and_hang["summary"]["rounds"][0]
    rows = {r["client_id"]: r for r in report["rows"]}
    # Execute: the committed global against the core's round over owner-b alone.
    committed = exchange.read_global(crash_and_hang["store"], crash_and_hang["ident"], 1)
    reference = round1.aggregate(
        {"owner-b": round1.honest["owner-b"]}, round1.config(federation={"min_clients": 1})
    )
    # Assert: owner-a recorded with the crash's message in the round table, the Prefect artifact
    # and MLflow; owner-b took the round alone (weight 1), bit-identical to the core's round.
    assert not rows["owner-a"]["accepted"] and rows["owner-a"]["weight"] == 0.0
    assert (
        rows["owner-a"]["reason"].startswith("client failed: ")
        and fault_hooks.CRASH_MESSAGE in rows["owner-a"]["reason"]
    )
    assert rows["owner-b"]["accepted"] and rows["owner-b"]["weight"] == 1.0
    assert same_adapter(committed, reference.adapter)
    markdown = _artifact_markdown("tiny-crash-hang-round-0001")
    assert fault_hooks.CRASH_MESSAGE in markdown and "| owner-a | **no** |" in markdown
    uri = cfg.tracking.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    metrics = client.get_run(report["mlflow_round_run_id"]).data.metrics
    assert metrics["client/owner-a/accepted"] == 0.0 and metrics["client/owner-a/weight"] == 0.0
    table = json.loads(
        Path(client.download_artifacts(report["mlflow_round_run_id"], "round_result.json")).read_text()
    )
    logged = {r["client_id"]: r for r in table["rows"]}
    assert fault_hooks.CRASH_MESSAGE in logged["owner-a"]["reason"]


def test_hanging_client_is_late_and_its_late_upload_is_ignored(crash_and_hang: dict[str, Any]) -> None:
    # Prepare
    cfg, report = crash_and_hang["cfg"], crash_and_hang["summary"]["rounds"][0]
    store, ident = crash_and_hang["store"], crash_and_hang["ident"]
    rows = {r["client_id"]: r for r in report["rows"]}
    # Execute: what the store holds after the flow returned.
    late = Ledger(cfg, store).delivered(1, "owner-c")
    committed = exchange.read_global_manifest(store, ident, 1)
    # Assert: recorded as late; the round committed without it; its upload came after the commit
    # (it hung until then) and is in no global adapter.
    timeout = cfg.federation.round_timeout_s
    assert not rows["owner-c"]["accepted"] and rows["owner-c"]["weight"] == 0.0
    assert rows["owner-c"]["reason"] == f"no delta within round_timeout_s={timeout:g}"
    assert late is not None and datetime.fromisoformat(late.created_at) > datetime.fromisoformat(
        committed.created_at
    )
    assert committed.clients == ["owner-b"]
    assert last_committed(store, ident) == 1


def test_round_below_quorum_fails_cleanly_through_the_flow(
    round1: Round1, tmp_path: Path, prefect_harness: None
) -> None:
    # Prepare: two owners, both needed; owner-a crashes.
    from flows.experiment import run_experiment

    raw = tiny_config(Path(round1.cfg.model.cache_dir), tmp_path)
    raw["name"] = "tiny-quorum"
    raw["clients"] = raw["clients"][:2]
    raw["clients"][0]["reward"] = "tests.fault_hooks.crashing_exact"
    raw["clients"][0]["reward_range"] = [0.0, 1.0]  # the exact reward it wraps
    raw["federation"] = {"rounds": 1, "min_clients": 2}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw["tracking"] = {"enabled": True, "tracking_uri": uri}
    cfg = parse_config(raw)
    store, ident = LocalStore(tmp_path / "store"), exchange.identity(cfg)
    # Execute
    with pytest.raises(QuorumError) as err:
        run_experiment(cfg)
    # Assert: the message names each client and why; round 1 has no object at all; theta_0 is intact.
    message = str(err.value)
    assert "owner-a: client failed: " in message and fault_hooks.CRASH_MESSAGE in message
    assert "1 valid delta(s) ['owner-b']" in message
    assert last_committed(store, ident) == 0
    assert store.list_keys(layout.global_prefix(ident.prefix, ident.experiment) + "round-0001") == []
    manifest = exchange.read_global_manifest(store, ident, 0)
    assert sha256_hex(store.get_bytes(manifest.adapter_key)) == manifest.sha256
    assert same_adapter(exchange.read_global(store, ident, 0), round1.theta0)
    assert "not committed" in _artifact_markdown("tiny-quorum-round-0001")
    # Assert: the MLflow parent run says FAILED instead of staying RUNNING.
    from mlflow import MlflowClient

    from fgrpo_io.tracking import ROLE_TAG, mlflow_experiment_name

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(mlflow_experiment_name(cfg.name)).experiment_id
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'experiment'")
    assert [r.info.status for r in runs] == ["FAILED"]
