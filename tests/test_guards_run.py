"""Attack 6 and rollback through the CLI and the real flows: the pin, the lease, `fgrpo rollback`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from fgrpo_app.cli import app
from fgrpo_core.config import parse_config
from fgrpo_io import exchange, layout, lease
from fgrpo_io.ledger import Ledger
from fgrpo_io.store import LocalStore
from tests.conftest import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _keys(store_root: Path) -> list[str]:
    """Every object but the lease's generations (a refused coordinator may not add any other)."""
    return sorted(
        p.relative_to(store_root).as_posix()
        for p in store_root.rglob("*")
        if p.is_file() and "/lease/" not in p.as_posix()
    )


def _run(path: Path, *extra: str) -> Any:
    return CliRunner().invoke(app, ["run", str(path), "--json", *extra])


@pytest.fixture(scope="module")
def two_rounds(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path, prefect_harness: None
) -> dict[str, Any]:
    """A 2-round tiny experiment run by `fgrpo run`, which the tests below try to resume badly."""
    out = tmp_path_factory.mktemp("guards")
    raw = tiny_config(model_cache, out, name="guarded")
    result = _run(_write(out / "tiny.yaml", raw))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return {"raw": raw, "out": out, "cfg": parse_config(raw), "summary": json.loads(result.stdout)}


def test_resume_with_another_config_is_refused_naming_the_fields(two_rounds: dict[str, Any]) -> None:
    # Prepare: the same experiment with another strategy and learning rate
    out, raw = two_rounds["out"], two_rounds["raw"]
    changed = {**raw, "aggregation": {"strategy": "fedavg"}, "grpo": {**raw["grpo"], "learning_rate": 2e-3}}
    before = _keys(out / "store")
    # Execute
    result = _run(_write(out / "changed.yaml", changed))
    # Assert: exit 1, both fields named, nothing written, the lease given back
    assert result.exit_code == 1, result.output
    assert 'aggregation.strategy: "fgrpo" -> "fedavg"' in result.output
    assert "grpo.learning_rate: 0.001 -> 0.002" in result.output
    assert "another `name:`" in result.output
    assert _keys(out / "store") == before
    ident = exchange.identity(two_rounds["cfg"])
    assert lease._newest(LocalStore(out / "store"), ident).released  # type: ignore[union-attr]


def test_a_second_coordinator_is_refused_before_it_writes_anything(two_rounds: dict[str, Any]) -> None:
    # Prepare: another live coordinator on this host holds the lease
    out, cfg = two_rounds["out"], two_rounds["cfg"]
    store, ident = LocalStore(out / "store"), exchange.identity(cfg)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    import psutil

    mine = lease.take(store, ident, ttl_s=600.0)
    held = mine.model_copy(
        update={
            "generation": mine.generation + 1,
            "holder": "other",
            "pid": other.pid,
            "pid_started": psutil.Process(other.pid).create_time(),
        }
    )
    lease._write(store, ident, held)
    before = _keys(out / "store")
    runs_before = len(
        MlflowClient(cfg.tracking.tracking_uri).search_runs(
            [MlflowClient(cfg.tracking.tracking_uri).get_experiment_by_name(cfg.name).experiment_id]
        )
    )
    try:
        # Execute: rounds raised, so it would train a round if it got the lease
        result = _run(
            _write(out / "more.yaml", {**two_rounds["raw"], "federation": {"rounds": 3, "min_clients": 2}})
        )
    finally:
        other.kill()
        other.wait()
    # Assert: a clear refusal naming the holder; no object and no MLflow run added
    assert result.exit_code == 1, result.output
    assert f"being run by another coordinator (host {held.host}, pid {other.pid}" in result.output
    assert _keys(out / "store") == before
    client = MlflowClient(cfg.tracking.tracking_uri)
    assert len(client.search_runs([client.get_experiment_by_name(cfg.name).experiment_id])) == runs_before


def test_rollback_restores_an_earlier_global_and_training_resumes_from_it(two_rounds: dict[str, Any]) -> None:
    # Prepare
    out, raw, cfg = two_rounds["out"], two_rounds["raw"], two_rounds["cfg"]
    path = _write(out / "tiny.yaml", raw)
    ledger = Ledger(cfg, LocalStore(out / "store"))
    store, ident = ledger.store, ledger.ident
    # Execute
    rolled = CliRunner().invoke(
        app, ["rollback", str(path), "--to-round", "1", "--reason", "round 2 regressed"]
    )
    # Assert: round 3 names theta_1 and carries round 1's state and evaluation
    assert rolled.exit_code == 0, rolled.output + repr(rolled.exception)
    assert "round 3 restores round 1's global adapter" in rolled.output
    r1, r3 = ledger.result(1), ledger.result(3)
    assert r1 is not None and r3 is not None
    assert (r3.status, r3.reason) == ("rolled_back", "rolled back to round 1: round 2 regressed")
    assert r3.evaluation == r1.evaluation
    assert (
        exchange.read_global_manifest(store, ident, 3).sha256
        == exchange.read_global_manifest(store, ident, 1).sha256
    )
    s1, s3 = exchange.read_state(store, ident, 1), exchange.read_state(store, ident, 3)
    assert s3.model_dump(exclude={"round"}) == s1.model_dump(exclude={"round"}) and s3.round == 3
    # Assert: the registry's champion is round 1's version, and the model says why
    client = MlflowClient(cfg.tracking.tracking_uri)
    name = f"fgrpo-{cfg.name}"
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.tags["round"] == "1"
    assert (
        "round 3 rolled back to round 1"
        in client.get_registered_model(name).tags["fgrpo.rollback.round-0003"]
    )
    # Assert: a rollback to a round that committed nothing new is refused with the choices
    refused = CliRunner().invoke(app, ["rollback", str(path), "--to-round", "3"])
    assert (
        refused.exit_code == 1
        and "choose one of the rounds that committed a new global: [0, 1, 2]" in refused.output
    )

    # Execute: continue the experiment for one more round
    more = _run(_write(out / "four.yaml", {**raw, "federation": {"rounds": 4, "min_clients": 2}}))
    # Assert: round 3 is logged as rolled back, round 4 trained from theta_1 (= round 2's start)
    assert more.exit_code == 0, more.output + repr(more.exception)
    rounds = {r["round"]: r for r in json.loads(more.stdout)["rounds"]}
    assert rounds[3]["status"] == "rolled_back" and rounds[3]["mlflow_round_run_id"]
    assert rounds[4]["status"] in ("committed", "refused")
    r2_pre = {row["client_id"]: row["r_pre"] for row in rounds[2]["rows"]}
    r4_pre = {row["client_id"]: row["r_pre"] for row in rounds[4]["rows"]}
    assert r4_pre == r2_pre
    assert layout.committed_rounds(store.list_keys(layout.state_prefix(ident.prefix, ident.experiment))) == [
        0,
        1,
        2,
        3,
        4,
    ]
