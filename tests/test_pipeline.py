"""The federated round through the real Prefect flows, a real S3 server and MLflow on SQLite."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import yaml
from botocore.config import Config
from typer.testing import CliRunner

from fgrpo_app.cli import app
from fgrpo_core.aggregation import compute_weights
from fgrpo_core.config import parse_config
from fgrpo_core.types import ClientStats, ServerState
from fgrpo_io.reports import artifact_key
from tests.conftest import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def s3_run(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path, prefect_harness: None, s3_endpoint: str
) -> dict[str, Any]:
    """One 2-round tiny experiment on S3 through `fgrpo run --json`, shared by the tests below."""
    # Prepare: a bucket on the moto server over HTTP, credentials in the environment only.
    import os

    out = tmp_path_factory.mktemp("pipeline")
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    os.environ["FGRPO_S3_ENDPOINT_URL"] = s3_endpoint
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    s3.create_bucket(Bucket="pipeline-test")
    cfg = tiny_config(model_cache, out, store={"kind": "s3", "bucket": "pipeline-test", "prefix": "fgrpo"})
    path = _write(out / "tiny.yaml", cfg)
    from fgrpo_io import exchange

    exchange.forget_cached_globals()
    decoded_before = exchange.decoded_globals
    # Execute
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads(result.stdout)
    decoded = exchange.decoded_globals - decoded_before
    return {"summary": summary, "cfg": parse_config(cfg), "s3": s3, "out": out, "decoded": decoded}


def test_global_adapters_are_decoded_at_most_once_per_round(s3_run: dict[str, Any]) -> None:
    # Prepare: a fresh process cache, one store read of the last committed global
    from fgrpo_core.deltas import encode
    from fgrpo_io import exchange
    from fgrpo_io.store import make_store

    cfg = s3_run["cfg"]
    store, ident = make_store(cfg.store), exchange.identity(cfg)
    written = exchange.read_global(store, ident, 2)
    exchange.forget_cached_globals()
    before = exchange.decoded_globals
    # Execute
    again = exchange.read_global(store, ident, 2)
    twice = exchange.read_global(store, ident, 2)
    # Assert: the run decoded none (what it wrote, it kept: theta_0..theta_2 and every reader of
    # them ran in this process); a cold read decodes once, a second read not at all.
    assert s3_run["decoded"] == 0
    assert exchange.decoded_globals - before == 1
    assert encode(again) == encode(written) == encode(twice)


def test_deltas_and_manifests_are_in_the_bucket(s3_run: dict[str, Any]) -> None:
    # Prepare
    s3, cfg = s3_run["s3"], s3_run["cfg"]
    # Execute / Assert: SPEC §7 keys, and bytes whose sha256 is the manifest's.
    for t in (1, 2):
        for client in ("owner-a", "owner-b", "owner-c"):
            base = f"fgrpo/{cfg.name}/clients/{client}/round-{t:04d}"
            manifest = json.loads(
                s3.get_object(Bucket="pipeline-test", Key=f"{base}/manifest.json")["Body"].read()
            )
            delta = s3.get_object(Bucket="pipeline-test", Key=f"{base}/delta.safetensors")["Body"].read()
            assert hashlib.sha256(delta).hexdigest() == manifest["sha256"]
            assert manifest["round"] == t and manifest["client_id"] == client
        glob = s3.get_object(
            Bucket="pipeline-test", Key=f"fgrpo/{cfg.name}/global/round-{t:04d}/manifest.json"
        )
        assert json.loads(glob["Body"].read())["round"] == t
        s3.head_object(Bucket="pipeline-test", Key=f"fgrpo/{cfg.name}/state/round-{t:04d}.json")


def test_summary_weights_are_the_strategys(s3_run: dict[str, Any]) -> None:
    # Prepare: the stats each client reported, read back from its manifest.
    s3, cfg, summary = s3_run["s3"], s3_run["cfg"], s3_run["summary"]
    state = ServerState()
    for report in summary["rounds"]:
        t = report["round"]
        stats = []
        for row in report["rows"]:
            key = f"fgrpo/{cfg.name}/clients/{row['client_id']}/round-{t:04d}/manifest.json"
            manifest = json.loads(s3.get_object(Bucket="pipeline-test", Key=key)["Body"].read())
            stats.append(ClientStats.model_validate(manifest["stats"]))
        # Execute: the reference computation from the logged stats alone.
        rows, state = compute_weights(stats, state, cfg.aggregation)
        # Assert
        want = {r.client_id: r.weight for r in rows}
        got = {r["client_id"]: r["weight"] for r in report["rows"]}
        assert got == pytest.approx(want, abs=1e-9)
        assert sum(got.values()) == pytest.approx(1.0)


def test_mlflow_holds_params_series_and_a_loadable_adapter(s3_run: dict[str, Any]) -> None:
    # Prepare
    import mlflow
    import peft
    import torch
    from mlflow import MlflowClient

    from fgrpo_core.base_models import load_base_model

    cfg, summary = s3_run["cfg"], s3_run["summary"]
    uri = cfg.tracking.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(summary["mlflow_run_id"])
    # Assert: the whole config as params, one series per client with R points.
    assert run.data.params["grpo.learning_rate"] == "0.001"
    assert run.data.params["aggregation.strategy"] == "fgrpo"
    for client_id in ("owner-a", "owner-b", "owner-c"):
        history = client.get_metric_history(run.info.run_id, f"client/{client_id}/weight")
        assert sorted(m.step for m in history) == [1, 2]
    # Assert: the global evaluation starts at step 0, the initial adapter, logged once.
    macro = client.get_metric_history(run.info.run_id, "eval/macro_accuracy")
    assert sorted(m.step for m in macro) == [0, 1, 2]
    assert macro[0].value == pytest.approx(summary["initial_evaluation"]["macro_accuracy"])
    # Execute: the registered adapter loads with PeftModel.from_pretrained.
    versions = client.search_model_versions(f"name = 'fgrpo-{cfg.name}'")
    assert len(versions) == 2
    latest = max(versions, key=lambda v: int(v.version))
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(latest.name, latest.version), tracking_uri=uri
    )
    base, _ = load_base_model(cfg.model, cfg.data.families)
    model = peft.PeftModel.from_pretrained(base, folder)
    lora = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    # Assert: trained B matrices are not all zero (PEFT initialises B to 0).
    assert lora and any(bool(torch.any(v != 0)) for v in lora.values())


def test_champion_is_the_best_round(s3_run: dict[str, Any]) -> None:
    # Prepare
    from mlflow import MlflowClient

    cfg, summary = s3_run["cfg"], s3_run["summary"]
    uri = cfg.tracking.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    scores = [r["evaluation"]["macro_accuracy"] for r in summary["rounds"]]
    # Execute
    aliases = client.get_registered_model(f"fgrpo-{cfg.name}").aliases
    # Assert: the first round that reached the best score holds `champion`.
    best_round = int(np.argmax(scores)) + 1
    champion = client.get_model_version(f"fgrpo-{cfg.name}", aliases["champion"])
    assert champion.tags["round"] == str(best_round)
    assert summary["registry"]["aliases"]["champion"] == str(aliases["champion"])
    # Assert: the README's way to fetch the champion gives a PEFT adapter folder (MLflow resolves
    # models:/ through the registry URI, which follows MLFLOW_TRACKING_URI as on a coordinator).
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/fgrpo-{cfg.name}@champion"))
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()


def test_timings_split_the_wall_time(s3_run: dict[str, Any]) -> None:
    # Prepare
    from fgrpo_io.timing import ORCHESTRATION, PARTS

    summary = s3_run["summary"]
    # Execute: the run-wide collector's split, as `fgrpo run --json` prints it.
    timings = summary["timings"]
    # Assert: every part, none negative, together the wall time (each rounded to the ms), and
    # every timed task's main part was collected (the flows themselves never touch timings).
    assert set(timings) == {*PARTS, ORCHESTRATION}
    assert all(seconds >= 0 for seconds in timings.values())
    assert sum(timings.values()) == pytest.approx(summary["wall_time_s"], abs=0.02)
    assert all(
        timings[part] > 0 for part in ("train_s", "aggregate_s", "evaluate_s", "store_io_s", "mlflow_s")
    )


def test_report_of_the_run_shows_its_rounds_and_registry(s3_run: dict[str, Any]) -> None:
    # Prepare
    from mlflow import MlflowClient

    cfg, summary, out = s3_run["cfg"], s3_run["summary"], s3_run["out"] / "report.html"
    uri = cfg.tracking.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    aliases = client.get_registered_model(f"fgrpo-{cfg.name}").aliases
    # Execute: from the S3 store and MLflow the config names.
    result = CliRunner().invoke(
        app, ["report", cfg.name, "--config", str(s3_run["out"] / "tiny.yaml"), "--out", str(out)]
    )
    # Assert: one table row per client and round, both plots, MLflow's aliases, the config.
    assert result.exit_code == 0, result.output + repr(result.exception)
    page = out.read_text()
    for report in summary["rounds"]:
        for row in report["rows"]:
            start = f'<td class="text">{report["round"]}</td><td class="text">{row["client_id"]}</td>'
            assert f"{start}<td>yes</td><td>{row['n_k']}</td><td>{row['r_pre'] + 0.0:.4g}</td>" in page
    assert page.count('src="data:image/png;base64,') == 2
    # Assert: the evaluation table starts at round 0, the initial adapter's accuracy.
    initial = summary["initial_evaluation"]["macro_accuracy"]
    row_0 = page.split('<tr><td class="text">0</td>')[1].split("</tr>")[0]
    assert f"<td>{initial + 0.0:.4g}</td>" in row_0
    listed = ", ".join(f"{a} → v{v}" for a, v in sorted(aliases.items()))
    assert f"aliases: {listed}" in page
    assert '<td class="text">aggregation.strategy</td><td class="text">fgrpo</td>' in page
    assert "s3://pipeline-test/fgrpo/" in page


def test_a_second_run_resumes_and_changes_nothing(s3_run: dict[str, Any], prefect_harness: None) -> None:
    # Prepare: the same config again, everything already committed.
    path = s3_run["out"] / "tiny.yaml"
    # Execute
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--json"])
    # Assert: no round re-run, the same reports.
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["resumed_from_round"] == 2
    # Round 0's evaluation comes back from its stored report, identical.
    assert again["initial_evaluation"] == s3_run["summary"]["initial_evaluation"]
    assert [r["global_key"] for r in again["rounds"]] == [
        r["global_key"] for r in s3_run["summary"]["rounds"]
    ]


def test_pipeline_equals_the_bare_loop(s3_run: dict[str, Any]) -> None:
    # Prepare: the same config through the in-process runner (no Prefect, no store, no MLflow).
    from fgrpo_core.deltas import encode
    from fgrpo_core.runner import run_in_process

    s3, cfg, summary = s3_run["s3"], s3_run["cfg"], s3_run["summary"]
    last = summary["rounds"][-1]
    manifest = json.loads(
        s3.get_object(
            Bucket="pipeline-test", Key=last["global_key"].replace("adapter.safetensors", "manifest.json")
        )["Body"].read()
    )
    # Execute
    result = run_in_process(cfg, s3_run["out"] / "bare")
    # Assert: bit-identical final adapter, identical weights every round.
    assert hashlib.sha256(encode(result.final_adapter)).hexdigest() == manifest["sha256"]
    for record, report in zip(result.rounds, summary["rounds"], strict=True):
        assert {r.client_id: r.weight for r in record.rows} == {
            r["client_id"]: r["weight"] for r in report["rows"]
        }


def test_each_rounds_table_is_an_artifact_of_that_rounds_flow_run(s3_run: dict[str, Any]) -> None:
    # Prepare: the record posts the table alongside the next round, onto the round's own run.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    cfg = s3_run["cfg"]
    keys = {artifact_key(cfg.name, t): f"{cfg.name}-round-{t:04d}" for t in (1, 2)}
    # Execute (other tests of the session may run experiments of the same name: all must hold)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys)))
        )
        runs = {a.id: client.read_flow_run(a.flow_run_id) for a in artifacts if a.flow_run_id is not None}
    # Assert: every round has its table, each on the flow run of its round, naming every owner.
    assert {a.key for a in artifacts} == set(keys)
    for artifact in artifacts:
        assert runs[artifact.id].name == keys[str(artifact.key)]
        assert all(f"| {c.id} |" in str(artifact.data) for c in cfg.clients)
