"""A round's MLflow record (and theta_0's evaluation) runs alongside the next round: a failed record loses nothing.

Round 2's record fails once round 3 has committed, so rounds 2 and 3 are committed in the store
without their MLflow record (round 3's record waits for round 2's and never runs). The rerun
records both before it trains anything, and ends with one round run and one version per round.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.futures import PrefectFuture

from fgrpo_core.config import ExperimentConfig, parse_config
from fgrpo_core.errors import FgrpoError
from fgrpo_core.types import EvalSummary, RoundResult
from fgrpo_io import exchange, layout
from fgrpo_io.ledger import Ledger
from fgrpo_io.store import LocalStore
from tests.conftest import tiny_config
from tests.faults.shared import Round1, last_committed

pytestmark = [pytest.mark.slow]

INJECTED = "injected: the registry refused round 2"


def _recorded_rounds(cfg: ExperimentConfig) -> tuple[list[str], dict[int, tuple[int, int]]]:
    """The parent runs; per round, how many finished round runs it has and how many versions."""
    from mlflow import MlflowClient

    from fgrpo_io.tracking import ROLE_TAG, ROUND_TAG, mlflow_experiment_name

    uri = cfg.tracking.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.get_experiment_by_name(mlflow_experiment_name(cfg.name)).experiment_id
    parents = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'experiment'")
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'round'")
    versions = client.search_model_versions(f"name = 'fgrpo-{cfg.name}'")
    out: dict[int, tuple[int, int]] = {}
    for t in range(1, cfg.federation.rounds + 1):
        finished = [r for r in runs if r.data.tags.get(ROUND_TAG) == str(t) and r.info.status == "FINISHED"]
        out[t] = (len(finished), sum(v.tags.get("round") == str(t) for v in versions))
    return [p.info.run_id for p in parents], out


def _tracked_experiment(
    round1: Round1, tmp_path: Path, name: str, rounds: int
) -> tuple[ExperimentConfig, LocalStore, exchange.Identity]:
    """Two owners, ``rounds`` rounds, tracking on; its store and identity, all under ``tmp_path``."""
    raw = tiny_config(Path(round1.cfg.model.cache_dir), tmp_path)
    raw["name"] = name
    raw["clients"] = raw["clients"][:2]
    raw["federation"] = {"rounds": rounds, "min_clients": 2}
    raw["tracking"] = {"enabled": True, "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cfg = parse_config(raw)
    return cfg, LocalStore(tmp_path / "store"), exchange.identity(cfg)


def test_a_failed_record_is_recorded_by_the_rerun_with_every_later_round(
    round1: Round1, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: 3 rounds, two owners, tracking on; round 2's registration fails, once, after round 3
    # has committed (its record would otherwise finish first: a record is short, a round is not).
    import tasks.record
    from flows.experiment import run_experiment

    cfg, store, ident = _tracked_experiment(round1, tmp_path, "tiny-record-lag", rounds=3)
    state_3 = store.root / layout.state_key(ident.prefix, ident.experiment, 3)
    register = tasks.record.register_round
    failed: list[int] = []

    def register_failing_once(
        cfg: ExperimentConfig, result: RoundResult, new_run: bool = False
    ) -> RoundResult:
        if result.round == 2 and not failed:
            deadline = time.monotonic() + 300
            while not state_3.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            failed.append(result.round)
            raise FgrpoError(INJECTED)
        return register(cfg, result, new_run)

    monkeypatch.setattr(tasks.record, "register_round", register_failing_once)
    # Execute: the first run fails on round 2's record; the same experiment again.
    with pytest.raises(FgrpoError, match=INJECTED):
        run_experiment(cfg)
    committed_after_fail = last_committed(store, ident)
    parents, recorded_after_fail = _recorded_rounds(cfg)
    first_after_fail = Ledger(cfg).first_round_to_run(parents[0])
    summary = run_experiment(cfg)
    # Assert: after the failure, round 1 is recorded, rounds 2 and 3 are committed without a record
    # (round 2's run is logged, its version is not), and the rerun starts at round 2.
    assert failed == [2]
    assert committed_after_fail == 3
    assert recorded_after_fail == {1: (1, 1), 2: (1, 0), 3: (0, 0)}
    assert first_after_fail == 2
    assert len(parents) == 1 and summary.mlflow_run_id == parents[0]
    assert summary.resumed_from_round == 3  # the last committed round when it started
    # Assert: the rerun trained nothing new and recorded both rounds, once each, in round order.
    assert last_committed(store, ident) == 3
    assert [r.round for r in summary.rounds] == [1, 2, 3]
    assert _recorded_rounds(cfg) == (parents, {1: (1, 1), 2: (1, 1), 3: (1, 1)})
    # Rounds 2 and 3 registered by the rerun, in round order, after round 1's version.
    versions = [int(r.registry.version) for r in summary.rounds[1:] if r.registry is not None]
    assert versions == [2, 3]


def test_a_record_retried_after_its_version_was_made_finds_it_and_registers_no_second_one(
    round1: Round1, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: 2 rounds; round 1's registration makes its version, then fails once (transient), so
    # Prefect retries the record, which finds its round run (not started by it) and searches.
    import tasks.record
    from fgrpo_io.tracking import TrackingError
    from flows.experiment import run_experiment

    cfg, _, _ = _tracked_experiment(round1, tmp_path, "tiny-record-retry", rounds=2)
    register = tasks.record.register_round_model
    made: list[str] = []

    def register_then_fail_once(*args: Any, **kwargs: Any) -> Any:
        outcome = register(*args, **kwargs)
        if not made:
            made.append(outcome.version)
            raise TrackingError("injected: MLflow's answer to round 1's registration was lost")
        return outcome

    monkeypatch.setattr(tasks.record, "register_round_model", register_then_fail_once)
    # Execute
    summary = run_experiment(cfg)
    # Assert: the retry found version 1; one round run and one version per round
    assert made == ["1"]
    assert [r.registry.version for r in summary.rounds if r.registry is not None] == ["1", "2"]
    assert _recorded_rounds(cfg)[1] == {1: (1, 1), 2: (1, 1)}


@pytest.mark.parametrize("when", ["before round 1", "during round 1"])
def test_a_failed_log_of_theta0s_evaluation_stops_the_run_before_the_next_round_and_the_rerun_logs_it(
    round1: Round1, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    # Prepare: 2 rounds, tracking on; theta_0's evaluation is logged alongside round 1 and fails
    # once, released before or after the check that precedes round 1 (both orders happen: the log
    # is short, and a slow machine starts round 1 after it). Each check waits for the log, so the
    # check before round 2 sees a failure during round 1.
    import flows.experiment
    from fgrpo_io.tracking import Tracker

    cfg, store, ident = _tracked_experiment(round1, tmp_path, "tiny-initial-log", rounds=2)
    log, check = Tracker.log_initial_evaluation, flows.experiment._stop_if_a_record_failed
    released = threading.Event()
    failed: list[str] = []
    checks: list[int] = []

    def log_failing_once(self: Tracker, parent_run_id: str, evaluation: EvalSummary) -> None:
        if not failed:
            failed.append(parent_run_id)
            released.wait(timeout=300)
            raise FgrpoError("injected: MLflow refused theta_0's evaluation")
        log(self, parent_run_id, evaluation)

    def check_in_order(chain: list[PrefectFuture[Any]]) -> None:
        checks.append(len(chain))
        if len(checks) == 1 and when == "during round 1":
            check(chain)  # passes: the log is still held
            released.set()
            return
        released.set()
        chain[0].wait()
        check(chain)

    monkeypatch.setattr(Tracker, "log_initial_evaluation", log_failing_once)
    monkeypatch.setattr(flows.experiment, "_stop_if_a_record_failed", check_in_order)
    expected_committed = {"before round 1": 0, "during round 1": 1}[when]
    # Execute
    with pytest.raises(FgrpoError, match="refused theta_0's evaluation"):
        flows.experiment.run_experiment(cfg)
    committed_after_fail = last_committed(store, ident)
    parents, recorded_after_fail = _recorded_rounds(cfg)
    logged_after_fail = Ledger(cfg).initial_evaluation_logged(parents[0])
    summary = flows.experiment.run_experiment(cfg)
    # Assert: the run stopped at the check after the failure; round 1's record (after the log) never ran.
    assert len(failed) == 1 and committed_after_fail == expected_committed
    assert recorded_after_fail == {1: (0, 0), 2: (0, 0)} and not logged_after_fail
    # Assert: the rerun logged theta_0's evaluation, recorded round 1, trained and recorded round 2.
    assert summary.mlflow_run_id == parents[0] and Ledger(cfg).initial_evaluation_logged(parents[0])
    assert summary.resumed_from_round == expected_committed
    assert [r.round for r in summary.rounds] == [1, 2] and last_committed(store, ident) == 2
    assert _recorded_rounds(cfg) == (parents, {1: (1, 1), 2: (1, 1)})
