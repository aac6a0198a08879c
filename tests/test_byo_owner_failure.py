"""An owner's permanent failure: classified, recorded under its prefix, never retried, rendered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fgrpo_app.run_summary import failed_owners
from fgrpo_core.config import ExperimentConfig, parse_config
from fgrpo_core.errors import ConfigError, OwnerError, TaskError
from fgrpo_core.owner_failure import OwnerFailure, classify, from_error, from_problems, is_permanent
from fgrpo_core.preflight import Problem, client_problems
from fgrpo_core.types import EvalSummary, RoundResult, RoundRow
from fgrpo_io import exchange, layout
from fgrpo_io.failures import read_owner_failure, write_owner_failure
from fgrpo_io.reports import round_markdown
from fgrpo_io.store import LocalStore, StoreUnavailableError


def _cfg(tmp_path: Path, data_path: Path) -> ExperimentConfig:
    client = {"id": "own", "data_path": str(data_path), "n_val": 2, "reward": "exact"}
    return parse_config(
        {"name": "f", "clients": [client], "data": {"families": ["add1"]}, "store": {"root": str(tmp_path)}}
    )


def test_classification_of_what_an_owner_raises() -> None:
    # Prepare
    errors = [
        OwnerError("reward", "the reward failed"),
        TaskError("own.jsonl:3: no 'prompt' column"),
        ConfigError("model.path: no config.json"),
        StoreUnavailableError("S3 down"),
        ConnectionError("reset"),
        ValueError("a crash"),
    ]
    # Execute
    kinds = [classify(err) for err in errors]
    failure = from_error("own", 2, errors[1])
    # Assert: data / reward / model are permanent; I/O and unknown crashes are not judged here.
    assert kinds == ["reward", "data", "model", None, None, None]
    assert (
        failure is not None
        and failure.reason == "permanent: data: TaskError: own.jsonl:3: no 'prompt' column"
    )
    assert from_error("own", 2, ConnectionError("reset")) is None


def test_preflight_problems_become_one_failure_with_the_first_kind(tmp_path: Path) -> None:
    # Prepare: a data file whose third record has no prompt
    rows = [{"prompt": "1+1?", "answer": "2"}, {"prompt": "2+1?", "answer": "3"}, {"question": "x"}]
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(tmp_path, path)
    # Execute
    failure = from_problems("own", 1, client_problems(cfg, cfg.clients[0]))
    gpu = from_problems("own", 1, [Problem(None, "gpu", "no CUDA"), Problem("own", "reward", "raises")])
    # Assert: the data problem names the record; GPU and LoRA problems are the model's to fix.
    assert failure is not None and failure.kind == "data" and "own.jsonl" in failure.message
    assert "prompt" in failure.message and is_permanent(failure.reason)
    assert gpu is not None and gpu.kind == "model" and gpu.message == "no CUDA; raises"
    assert from_problems("own", 1, []) is None


def test_record_round_trip_and_records_that_claim_another_owner(tmp_path: Path) -> None:
    # Prepare
    store = LocalStore(tmp_path)
    cfg = parse_config(
        {"name": "f", "clients": [{"id": "own"}, {"id": "other"}], "data": {"families": ["add1"]}}
    )
    ident = exchange.identity(cfg)
    failure = OwnerFailure(client_id="own", round=3, kind="reward", message="ValueError: boom")
    # Execute
    key = write_owner_failure(store, ident, failure)
    forged = layout.client_failure_key(ident.prefix, ident.experiment, "other", 3)
    store.put_bytes(forged, failure.model_dump_json().encode())  # names "own" under other's prefix
    store.put_bytes(layout.client_failure_key(ident.prefix, ident.experiment, "other", 4), b"not json")
    # Assert: under the owner's own round prefix; trusted only for that owner and round.
    assert key == "fgrpo/f/clients/own/round-0003/failure.json"
    assert read_owner_failure(store, ident, 3, "own") == failure
    assert read_owner_failure(store, ident, 3, "other") is None
    assert read_owner_failure(store, ident, 4, "other") is None
    assert read_owner_failure(store, ident, 5, "own") is None


def test_a_permanent_failure_is_not_retried(prefect_harness: None) -> None:
    # Prepare: a task with the project's retry policy that fails as an owner with bad data does
    from prefect import task

    from tasks.retry import is_transient

    calls: list[int] = []

    @task(retries=2, retry_condition_fn=is_transient, retry_delay_seconds=0)
    def owner_round() -> None:
        calls.append(1)
        raise OwnerError("data", "own.jsonl:3: no 'prompt' column")

    # Execute / Assert: one try, and the owner's error as raised
    with pytest.raises(OwnerError, match="no 'prompt' column"):
        owner_round()
    assert len(calls) == 1


def test_round_table_artifact_and_summary_name_the_failed_owner() -> None:
    # Prepare: a committed round without owner "b"
    reason = "permanent: reward: the reward failed on 4 of its examples: ValueError: boom"
    result = RoundResult(
        round=1,
        status="committed",
        global_key="g",
        candidate_key="c",
        state_key="s",
        rows=[RoundRow(client_id="a", accepted=True), RoundRow(client_id="b", accepted=False, reason=reason)],
        evaluation=EvalSummary(families={}, macro_accuracy=0.0),
    )
    # Execute
    markdown = round_markdown("exp", result)
    listed = failed_owners([result.model_dump(mode="json")])
    # Assert
    assert f"- **b**: {reason}" in markdown and "Owners that failed permanently" in markdown
    assert listed == [{"round": 1, "client_id": "b", "reason": reason}]
