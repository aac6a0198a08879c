"""MLflow layer on a temporary SQLite store: params, round metrics, artifacts, registry aliases."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from fgrpo_core.config import TrackingSettings, parse_config
from fgrpo_core.types import EvalSummary, FamilyScore, RoundResult, RoundRow
from fgrpo_io.registry import AdapterIdentity, get_aliases, register_round_model, round_version
from fgrpo_io.tracking import HTTP_ENV_DEFAULTS, Tracker, TrackingError
from fgrpo_io.tracking_config import (
    PARAM_VALUE_LIMIT,
    TRUNCATION_MARKER,
    flatten_config,
    resolve_tracking_uri,
)

CONFIG = {
    "name": "track-test",
    "clients": [{"id": "a", "families": ["add1"]}, {"id": "b", "families": ["mul1"]}],
    "grpo": {"learning_rate": 0.002},
    "data": {"families": ["add1", "mul1"]},
}


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    root = tmp_path_factory.mktemp("mlflow")
    return Tracker(f"sqlite:///{root / 'mlflow.db'}", artifact_root=root / "artifacts")


def _row(client_id: str, weight: float, accepted: bool) -> RoundRow:
    return RoundRow(
        client_id=client_id, r_pre=0.2, r_post=0.3, sigma_diff=0.1, baseline=0.2, scale=0.05,
        gain=1.5, weight=weight, delta_norm=0.7, delta_bytes=1024, accepted=accepted,
    )  # fmt: skip


def _result(t: int, rows: list[RoundRow], add1: float, macro: float) -> RoundResult:
    families = {"add1": FamilyScore(accuracy=add1, mean_reward=0.4, n=8)}
    return RoundResult(
        round=t, status="committed", global_key=f"g/{t}", candidate_key=f"g/{t}", state_key=f"s/{t}",
        rows=rows, evaluation=EvalSummary(families=families, macro_accuracy=macro),
    )  # fmt: skip


def _adapter_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    rng = np.random.default_rng(0)
    (folder / "adapter_model.safetensors").write_bytes(rng.bytes(4096))
    return folder


def test_resolve_tracking_uri_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    # Execute
    default = resolve_tracking_uri(TrackingSettings(), out)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    from_env = resolve_tracking_uri(TrackingSettings(), out)
    configured = resolve_tracking_uri(TrackingSettings(tracking_uri="sqlite:///x.db"), out)
    # Assert
    assert default == f"sqlite:///{out.resolve() / 'mlflow.db'}" and out.is_dir()
    assert from_env == "http://127.0.0.1:5000"
    assert configured == "sqlite:///x.db"


def test_flatten_config_dotted_keys_and_truncation() -> None:
    # Prepare
    cfg = parse_config(CONFIG)
    long_cfg = TrackingSettings(registered_model_name="m" * (PARAM_VALUE_LIMIT + 10))
    # Execute
    flat = flatten_config(cfg)
    long_flat = flatten_config(long_cfg)
    # Assert
    assert flat["grpo.learning_rate"] == "0.002"
    assert flat["data.families"] == "add1,mul1"
    assert flat["clients.1.id"] == "b"
    modules = cfg.lora.target_modules  # PEFT's "all-linear" string, or a list of names
    assert flat["lora.target_modules"] == (modules if isinstance(modules, str) else ",".join(modules))
    assert flat["tracking.tracking_uri"] == "None"
    assert all(isinstance(v, str) for v in flat.values())
    value = long_flat["registered_model_name"]
    assert len(value) == PARAM_VALUE_LIMIT and value.endswith(TRUNCATION_MARKER)


def test_runs_params_round_metrics_and_tables(tracker: Tracker) -> None:
    # Prepare
    params = flatten_config(parse_config(CONFIG))
    weights = {0: {"a": 0.25, "b": 0.75}, 1: {"a": 0.6, "b": 0.4}}
    # Execute
    parent = tracker.start_experiment_run("fgrpo-tests", "track-test", params, {"strategy": "fgrpo"})
    round_runs = []
    for r in (0, 1):
        round_run = tracker.open_round_run(parent, r + 1)[0]
        rows = [_row("a", weights[r]["a"], True), _row("b", weights[r]["b"], r == 0)]
        tracker.log_round(parent, round_run, "track-test", _result(r + 1, rows, 0.5 + r / 10, 0.45))
        tracker.finish_run(round_run)
        round_runs.append(round_run)
    unfinished = tracker.unfinished_parent_run("fgrpo-tests", "track-test")
    resumed = tracker.start_experiment_run(
        "fgrpo-tests", "track-test", params, {"strategy": "fgrpo"}, resume=unfinished
    )
    tracker.finish_run(parent)
    # Assert
    client = tracker.client
    run = client.get_run(parent)
    assert resumed == parent and run.info.status == "FINISHED"
    assert run.data.params["grpo.learning_rate"] == "0.002"
    assert run.data.params["clients.0.id"] == "a"
    history = sorted(client.get_metric_history(parent, "client/a/weight"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.6)]
    accepted_b = sorted(client.get_metric_history(parent, "client/b/accepted"), key=lambda m: m.step)
    assert [m.value for m in accepted_b] == [1.0, 0.0]
    assert run.data.metrics["eval/add1/accuracy"] == pytest.approx(0.6)
    assert run.data.metrics["eval/macro_accuracy"] == pytest.approx(0.45)
    round_1 = client.get_run(round_runs[1])
    assert round_1.info.run_name == "round-0002"
    assert round_1.data.tags["mlflow.parentRunId"] == parent
    assert round_1.data.metrics["client/a/weight"] == pytest.approx(0.6)
    assert [m.step for m in client.get_metric_history(round_runs[1], "client/a/weight")] == [0]
    assert {f.path for f in client.list_artifacts(round_runs[0])} == {"round_result.json", "round_table.md"}
    assert tracker.round_run(parent, 2) == (round_runs[1], True, False)
    assert tracker.unfinished_parent_run("fgrpo-tests", "track-test") is None


def test_a_round_run_is_found_and_marked_logged(tracker: Tracker) -> None:
    # Prepare
    parent = tracker.start_experiment_run("fgrpo-tests", "resume-round", {}, {})
    round_run, logged, started = tracker.open_round_run(parent, 1)
    before = tracker.round_run(parent, 1)
    reopened = tracker.open_round_run(parent, 1)  # a retried record, before it logged anything
    # Execute
    tracker.log_round(parent, round_run, "resume-round", _result(1, [_row("a", 1.0, True)], 0.3, 0.3))
    # Assert: the ledger's question (is round 1 logged?) has its answer in MLflow.
    assert not logged and started and before == (round_run, False, False)
    assert reopened == (round_run, False, False)  # found, not started: a version may come from it
    assert tracker.round_run(parent, 1) == (round_run, True, False)
    assert tracker.open_round_run(parent, 1) == (round_run, True, False)
    assert tracker.round_run(parent, 2) is None
    assert len(tracker.client.get_metric_history(parent, "client/a/weight")) == 1
    children = tracker.client.search_runs(
        [tracker.client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert [r.info.run_id for r in children] == [round_run]


def test_a_round_past_one_metrics_batch_is_logged_whole(tracker: Tracker) -> None:
    # Prepare: 120 clients' series are more metrics than one MLflow batch takes (1000)
    parent = tracker.start_experiment_run("fgrpo-tests", "wide-round", {}, {})
    round_run = tracker.open_round_run(parent, 1).run_id
    rows = [_row(f"c{i:03d}", 1 / 120, True) for i in range(120)]
    # Execute
    tracker.log_round(parent, round_run, "wide-round", _result(1, rows, 0.3, 0.3))
    # Assert: every series on both runs, and the logged tag (sent with the last batch)
    run = tracker.client.get_run(round_run)
    assert len(run.data.metrics) == len(tracker.client.get_run(parent).data.metrics) > 1000
    assert run.data.metrics["client/c119/weight"] == pytest.approx(1 / 120)
    assert tracker.round_run(parent, 1) == (round_run, True, False)


def test_resume_with_changed_params_is_refused(tracker: Tracker) -> None:
    # Prepare
    tracker.start_experiment_run("fgrpo-tests", "changed", {"grpo.learning_rate": "0.001"}, {})
    unfinished = tracker.unfinished_parent_run("fgrpo-tests", "changed")
    # Execute / Assert
    with pytest.raises(TrackingError, match=r"grpo\.learning_rate"):
        tracker.start_experiment_run(
            "fgrpo-tests", "changed", {"grpo.learning_rate": "0.01"}, {}, resume=unfinished
        )


def test_registry_champion_and_challenger(tracker: Tracker, tmp_path: Path) -> None:
    # Prepare
    client = tracker.client
    parent = tracker.start_experiment_run("fgrpo-tests", "registry", {}, {})
    folder = _adapter_folder(tmp_path / "adapter")
    scores = [0.5, 0.4, 0.6]
    # Execute
    results, aliases = [], []
    for r, score in enumerate(scores):
        round_run = tracker.open_round_run(parent, r)[0]
        tracker.log_adapter_artifacts(round_run, folder)
        results.append(
            register_round_model(client, "fgrpo-reg", round_run, "adapter", r, "registry", "fgrpo", score)
        )
        aliases.append(get_aliases(client, "fgrpo-reg"))
    existing = round_version(client, "fgrpo-reg", round_run, 2)
    replay = register_round_model(
        client, "fgrpo-reg", round_run, "adapter", 2, "registry", "fgrpo", 0.6, existing_version=existing
    )
    # Assert
    assert [res.version for res in results] == ["1", "2", "3"]
    assert [res.alias for res in results] == ["champion", "challenger", "champion"]
    assert [res.previous_champion_score for res in results] == [None, 0.5, 0.5]
    assert aliases[0] == {"champion": "1"}
    assert aliases[1] == {"champion": "1", "challenger": "2"}
    # A new champion leaves the challenger where it was (the latest version that lost).
    assert aliases[2] == {"champion": "3", "challenger": "2"}
    assert existing == "3" and (replay.version, replay.alias) == ("3", "champion")
    assert len(client.search_model_versions("name = 'fgrpo-reg'")) == 3
    tags = client.get_model_version("fgrpo-reg", "2").tags
    assert tags["experiment"] == "registry" and tags["round"] == "1" and tags["strategy"] == "fgrpo"
    assert float(tags["global_macro_accuracy"]) == 0.4
    assert get_aliases(client, "no-such-model") == {}
    assert round_version(client, "no-such-model", round_run, 2) is None


def test_registry_tie_goes_to_challenger(tracker: Tracker, tmp_path: Path) -> None:
    # Prepare
    parent = tracker.start_experiment_run("fgrpo-tests", "tie", {}, {})
    runs = [tracker.open_round_run(parent, r)[0] for r in (0, 1)]
    # Execute
    first = register_round_model(tracker.client, "fgrpo-tie", runs[0], "adapter", 0, "tie", "fedavg", 0.5)
    second = register_round_model(tracker.client, "fgrpo-tie", runs[1], "adapter", 1, "tie", "fedavg", 0.5)
    # Assert
    assert (first.alias, second.alias, second.champion_version) == ("champion", "challenger", "1")


def test_registry_version_names_its_base_model(tracker: Tracker) -> None:
    # Prepare: the identity a round's registration passes (the experiment's base, theta_t's sha256)
    parent = tracker.start_experiment_run("fgrpo-tests", "base-tags", {}, {})
    round_run = tracker.open_round_run(parent, 3)[0]
    identity = AdapterIdentity("HuggingFaceTB/SmolLM2-135M-Instruct", "12fd25f7", "ab" * 32)
    # Execute
    made = register_round_model(
        tracker.client, "fgrpo-base", round_run, "adapter", 3, "base-tags", "fgrpo", 0.5, identity=identity
    )
    # Assert: the version itself says which base it needs, read back from the tracking server.
    tags = tracker.client.get_model_version("fgrpo-base", made.version).tags
    assert tags["base_model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert tags["base_model_revision"] == "12fd25f7"
    assert tags["adapter_sha256"] == "ab" * 32 and tags["round"] == "3"


def test_adapter_folder_round_trip(tracker: Tracker, tmp_path: Path) -> None:
    # Prepare
    folder = _adapter_folder(tmp_path / "adapter")
    parent = tracker.start_experiment_run("fgrpo-tests", "artifacts", {}, {})
    # Execute
    tracker.log_adapter_artifacts(parent, folder)
    local = mlflow.artifacts.download_artifacts(
        run_id=parent, artifact_path="adapter", dst_path=str(tmp_path / "dl"), tracking_uri=tracker.uri
    )
    # Assert
    names = sorted(p.name for p in Path(local).iterdir())
    assert names == ["adapter_config.json", "adapter_model.safetensors"]
    for name in names:
        assert (Path(local) / name).read_bytes() == (folder / name).read_bytes()
    with pytest.raises(TrackingError, match="missing or empty"):
        tracker.log_adapter_artifacts(parent, tmp_path / "nothing")


def test_unreachable_server_raises_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    for name, value in HTTP_ENV_DEFAULTS.items():
        monkeypatch.setenv(name, os.environ.get(name, value))  # Tracker's setdefault then leaks nothing
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    # Execute / Assert
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port}"):
        Tracker(f"http://127.0.0.1:{port}")
    probe_s = time.monotonic() - start
    # A raw client (registry helpers) against the dead port, with retries off for speed.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    raw = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}", registry_uri=f"http://127.0.0.1:{port}")
    with pytest.raises(TrackingError, match="is running and reachable"):
        get_aliases(raw, "fgrpo-any")
    assert probe_s < 5.0 and time.monotonic() - start < 10.0
