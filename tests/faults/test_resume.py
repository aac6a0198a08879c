"""A coordinator killed with SIGKILL resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fgrpo_core.config import parse_config
from fgrpo_core.deltas import encode
from fgrpo_core.federation import (
    ClientUpdate,
    RoundOutcome,
    aggregate_round,
    client_update,
)
from fgrpo_core.runner import transport
from fgrpo_io import exchange, layout
from fgrpo_io.environment import child_env
from fgrpo_io.store import LocalStore
from tests.conftest import tiny_config
from tests.faults.shared import (
    CLIENTS,
    REPO,
    Round1,
    last_committed,
)

pytestmark = [pytest.mark.slow]


# --- a coordinator killed with SIGKILL resumes and ends where an uninterrupted run ends ----------


def _cli_env(prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FGRPO_", "MLFLOW_"))}
    return child_env(env, PREFECT_HOME=str(prefect_home))


def _bare_round_2(round1: Round1) -> RoundOutcome:
    """Round 2 of the bare loop after round 1: the calls `fgrpo_core.runner.run_in_process` makes
    (the pipeline equals it: tests/test_pipeline.py::test_pipeline_equals_the_bare_loop)."""
    theta1, updates, sizes = round1.outcome.adapter, {}, {}
    for cid in CLIENTS:
        work = Path(round1.cfg.output_dir) / "work"
        update = client_update(round1.bundle, theta1, round1.cfg, cid, 2, work)
        delta, sizes[cid] = transport(update.delta, round1.cfg)
        updates[cid] = ClientUpdate(delta=delta, stats=update.stats)
    return aggregate_round(theta1, updates, {}, round1.outcome.state, round1.cfg, 2, sizes)


def test_sigkilled_coordinator_resumes_to_the_uninterrupted_result(round1: Round1, tmp_path: Path) -> None:
    # Prepare: `fgrpo run --json` on the 2-round tiny config, local store, MLflow on SQLite.
    from mlflow import MlflowClient

    raw = tiny_config(Path(round1.cfg.model.cache_dir), tmp_path / "out")
    cfg = parse_config(raw)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    store, ident = LocalStore(Path(cfg.store.root)), exchange.identity(cfg)
    state_1 = store.root / layout.state_key(ident.prefix, ident.experiment, 1)
    command = [sys.executable, "-m", "fgrpo_app.cli", "run", "--config", str(path), "--json"]
    env = _cli_env(tmp_path / "prefect-home")

    def start(name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.out").open("wb") as out, (tmp_path / f"{name}.err").open("wb") as err:
            # Own session: the kill takes the CLI and the ephemeral Prefect server it started.
            return subprocess.Popen(
                command, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True
            )

    # Execute: kill -9 as soon as round 1 is committed, then run the same command again.
    first = start("first")
    deadline = time.monotonic() + 300
    while not state_1.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, (tmp_path / "first.err").read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = {
        "committed": last_committed(store, ident),
        "reported_1": store.exists(
            layout.global_prefix(ident.prefix, ident.experiment) + "round-0001/result.json"
        ),
    }
    second = start("second")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.err").read_text()[-3000:]
    summary = json.loads((tmp_path / "second.out").read_text())
    reference = _bare_round_2(round1)
    # Assert: resumed at round 1, both rounds reported, the final adapter is the bare loop's.
    assert killed_at["committed"] == 1, killed_at
    assert summary["resumed_from_round"] == 1
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    final = exchange.read_global_manifest(store, ident, 2)
    assert final.sha256 == hashlib.sha256(encode(reference.adapter)).hexdigest()
    for outcome, report in zip((round1.outcome, reference), summary["rounds"], strict=True):
        assert {r.client_id: r.weight for r in outcome.rows} == {
            r["client_id"]: r["weight"] for r in report["rows"]
        }
    # Nothing lost in MLflow either: each client's series has both rounds, both versions registered.
    uri = cfg.tracking.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for cid in CLIENTS:
        history = client.get_metric_history(summary["mlflow_run_id"], f"client/{cid}/weight")
        assert sorted({m.step for m in history}) == [1, 2]
    versions = client.search_model_versions(f"name = 'fgrpo-{cfg.name}'")
    assert {v.tags.get("round") for v in versions} == {"1", "2"}
