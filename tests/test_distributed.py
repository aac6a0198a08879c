"""Distributed mode through `fgrpo stack up`: real Prefect server, one worker per owner, moto S3 with IAM.

The coordinator (this test process) initialises theta_0, fans each round out to the owners'
deployments with `flows.distributed.fan_out` and aggregates; the owners train in their workers'
flow-run processes with their own credentials and config.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fgrpo_app import stack
from fgrpo_app.cli import app
from fgrpo_core.aggregation import compute_weights
from fgrpo_core.config import ExperimentConfig, parse_config
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.manifest import ClientManifest
from fgrpo_core.types import ClientStats, ServerState
from fgrpo_io import exchange, layout
from fgrpo_io.s3_store import S3Store
from fgrpo_io.store import StoreAccessDeniedError
from flows.distributed import fan_out
from tests.conftest import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OWNERS = ("owner-a", "owner-b")
BUCKET = "fgrpo-dist"


def _config(model_cache: Path, out: Path) -> dict[str, Any]:
    cfg = tiny_config(
        model_cache,
        out,
        store={"kind": "s3", "bucket": BUCKET, "prefix": "fgrpo"},
        federation={"rounds": 2, "min_clients": 2, "mode": "distributed", "round_timeout_s": 240},
        tracking={"enabled": False, "tracking_uri": None},
    )
    cfg["clients"] = [c for c in cfg["clients"] if c["id"] in OWNERS]
    return cfg


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines())
    return {k: v for k, v in pairs}


def _settings(api_url: str, auth: str) -> Any:
    """The coordinator's Prefect client settings: the stack's API and its basic-auth string."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth})


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[dict[str, Any]]:
    """`fgrpo stack up` with 2 owners, then two distributed rounds; `down` at the end in any case."""
    from tasks.aggregate import aggregate_task, commit_task, initialise_task
    from tasks.evaluate_global import evaluate_candidate_task, initial_evaluation_task

    # Prepare: the experiment config every site shares (here one file on one machine).
    out = tmp_path_factory.mktemp("distributed")
    raw = _config(model_cache, out)
    config_path = out / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    cfg = parse_config(raw)
    stack_dir = out / "stack"
    result = CliRunner().invoke(app, ["stack", "up", "--config", str(config_path), "--dir", str(stack_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    state = stack.read_state(stack_dir)
    assert state is not None
    coordinator = _env_file(stack_dir / "coordinator.env")
    try:
        with (
            pytest.MonkeyPatch.context() as mp,
            _settings(state["env"]["PREFECT_API_URL"], coordinator["PREFECT_API_AUTH_STRING"]),
        ):
            for name, value in coordinator.items():
                mp.setenv(name, value)
            # Execute: the coordinator's loop of the round flow in distributed mode.
            initialise_task.fn(cfg)  # also warms the shared model cache before the owners load it
            initial_evaluation_task.fn(cfg)
            rounds = []
            for t in (1, 2):
                delivered, failed = fan_out(cfg, t)
                candidate = aggregate_task.fn(cfg, t, delivered, failed)
                committed = commit_task.fn(cfg, candidate, evaluate_candidate_task.fn(cfg, candidate))
                rounds.append({"delivered": delivered, "failed": failed, **committed.model_dump()})
            yield {
                "cfg": cfg,
                "rounds": rounds,
                "stack_dir": stack_dir,
                "state": state,
                "config_path": config_path,
                "up_output": result.output,
                "api_url": state["env"]["PREFECT_API_URL"],
                "auth": coordinator["PREFECT_API_AUTH_STRING"],
            }
    finally:
        stack.down(stack_dir)


def _coordinator_store(dist: dict[str, Any], mp: pytest.MonkeyPatch) -> S3Store:
    for name, value in _env_file(dist["stack_dir"] / "coordinator.env").items():
        mp.setenv(name, value)
    return S3Store(BUCKET, endpoint_url=dist["state"]["env"]["FGRPO_S3_ENDPOINT_URL"])


def _owner_store(dist: dict[str, Any], owner: str, mp: pytest.MonkeyPatch) -> S3Store:
    for name, value in _env_file(dist["stack_dir"] / "credentials" / f"{owner}.env").items():
        mp.setenv(name, value)
    return S3Store(BUCKET, endpoint_url=dist["state"]["env"]["FGRPO_S3_ENDPOINT_URL"])


def test_stack_status_lists_every_component_alive(dist: dict[str, Any]) -> None:
    # Execute
    rows = {r["name"]: r for r in stack.status(dist["stack_dir"])}
    env = dist["state"]["env"]
    # Assert: three servers and one worker per owner, all on 127.0.0.1 and answering.
    assert set(rows) == {"prefect-server", "mlflow-server", "s3-server", "worker-owner-a", "worker-owner-b"}
    assert all(r["alive"] and r["url"].startswith("http://127.0.0.1:") for r in rows.values())
    for url in (f"{env['PREFECT_API_URL']}/health", f"{env['MLFLOW_TRACKING_URI']}/health"):
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
    assert f"export PREFECT_API_URL={env['PREFECT_API_URL']}" in dist["up_output"]
    # The rounds above ran with Prefect basic auth on; its secret is not printed.
    assert dist["auth"].startswith("fgrpo:") and dist["auth"] not in dist["up_output"]


def test_up_again_reports_the_running_stack(dist: dict[str, Any]) -> None:
    # Execute
    result = CliRunner().invoke(
        app, ["stack", "up", "--config", str(dist["config_path"]), "--dir", str(dist["stack_dir"])]
    )
    # Assert: nothing new started.
    assert result.exit_code == 0, result.output
    assert "already running" in result.output
    assert stack.read_state(dist["stack_dir"]) == dist["state"]


def test_both_rounds_committed_with_every_owners_delta(dist: dict[str, Any]) -> None:
    # Prepare
    cfg: ExperimentConfig = dist["cfg"]
    with pytest.MonkeyPatch.context() as mp:
        store = _coordinator_store(dist, mp)
        state = ServerState()
        for report in dist["rounds"]:
            t = report["round"]
            # Assert: every owner delivered; its bytes match its manifest (SPEC §7 keys).
            assert report["delivered"] == list(OWNERS) and report["failed"] == {}
            stats = []
            for owner in OWNERS:
                manifest = json.loads(
                    store.get_bytes(layout.client_manifest_key("fgrpo", cfg.name, owner, t))
                )
                delta = store.get_bytes(layout.client_delta_key("fgrpo", cfg.name, owner, t))
                assert hashlib.sha256(delta).hexdigest() == manifest["sha256"]
                assert manifest["client_id"] == owner and manifest["round"] == t
                stats.append(ClientStats.model_validate(manifest["stats"]))
            assert store.exists(layout.state_key("fgrpo", cfg.name, t))
            # Assert: the weights are the strategy's, recomputed from the owners' reported stats.
            rows, state = compute_weights(stats, state, cfg.aggregation)
            got = {r["client_id"]: r["weight"] for r in report["rows"]}
            assert got == pytest.approx({r.client_id: r.weight for r in rows}, abs=1e-9)


def test_each_owner_ran_on_its_own_pool(dist: dict[str, Any]) -> None:
    # Prepare
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async def client_runs() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["fgrpo-client"]))
            )

    # Execute
    with _settings(dist["api_url"], dist["auth"]):
        runs = asyncio.run(client_runs())
    # Assert: one completed run per owner and round, on pool owner-<id>; the coordinator
    # passed no path and no data, only the owner, the round and the experiment's name.
    seen = sorted(
        (r.parameters["client_id"], r.parameters["round_idx"])
        for r in runs
        if r.state and r.state.is_completed()
    )
    assert seen == [(o, t) for o in OWNERS for t in (1, 2)]
    for run in runs:
        assert run.work_pool_name == f"owner-{run.parameters['client_id']}"
        assert set(run.parameters) == {"client_id", "round_idx", "experiment"}


def test_owner_credentials_cannot_write_another_owners_prefix(dist: dict[str, Any]) -> None:
    # Prepare: moto enforces the IAM policy of owner-a's own key pair.
    name = dist["cfg"].name
    with pytest.MonkeyPatch.context() as mp:
        alice = _owner_store(dist, "owner-a", mp)
        # Execute / Assert: she reads global/, writes her prefix, and nothing else.
        assert alice.get_bytes(layout.global_manifest_key("fgrpo", name, 2))
        alice.put_bytes(f"{layout.client_prefix('fgrpo', name, 'owner-a')}scratch.bin", b"ok")
        with pytest.raises(StoreAccessDeniedError):
            alice.put_bytes(layout.client_delta_key("fgrpo", name, "owner-b", 3), b"forged")
        with pytest.raises(StoreAccessDeniedError):
            alice.put_bytes(layout.global_adapter_key("fgrpo", name, 3), b"forged")


def test_manifest_under_own_prefix_claiming_another_owner_is_refused(dist: dict[str, Any]) -> None:
    # Prepare: owner-a copies owner-b's round-2 manifest into her own round-3 folder, once as
    # is (claims owner-b) and once with her id but owner-b's delta key.
    cfg: ExperimentConfig = dist["cfg"]
    ident = exchange.identity(cfg)
    with pytest.MonkeyPatch.context() as mp:
        admin = _coordinator_store(dist, mp)
        theirs = ClientManifest.model_validate(
            json.loads(admin.get_bytes(layout.client_manifest_key("fgrpo", cfg.name, "owner-b", 2)))
        )
    forged = {
        3: theirs.model_copy(update={"round": 3}),
        4: theirs.model_copy(
            update={
                "round": 4,
                "client_id": "owner-a",
                "stats": theirs.stats.model_copy(update={"client_id": "owner-a", "round": 4}),
            }
        ),
    }
    with pytest.MonkeyPatch.context() as mp:
        alice = _owner_store(dist, "owner-a", mp)
        for t, manifest in forged.items():
            alice.put_bytes(
                layout.client_manifest_key("fgrpo", cfg.name, "owner-a", t),
                manifest.model_dump_json().encode(),
            )
    # Execute / Assert: the coordinator's manifest check refuses both.
    with pytest.MonkeyPatch.context() as mp:
        admin = _coordinator_store(dist, mp)
        theta = exchange.read_global(admin, ident, 2)
        for t, needle in ((3, "owner-b"), (4, "outside its owner's own prefix")):
            expected = exchange.expected_update(ident, t, "owner-a", theta, cfg.federation.delta_dtype)
            with pytest.raises(DeltaValidationError, match=needle):
                exchange.read_client_delta(admin, ident, expected)


def test_owner_refuses_another_experiment_and_late_runs_fail(dist: dict[str, Any]) -> None:
    # Prepare: the coordinator asks for an experiment the owners' configs do not hold, then
    # gives a round no time at all.
    cfg: ExperimentConfig = dist["cfg"]
    other = cfg.model_copy(update={"name": "not-this-one"})
    hurried = cfg.model_copy(
        update={"federation": cfg.federation.model_copy(update={"round_timeout_s": 0.5})}
    )
    # Execute
    with _settings(dist["api_url"], dist["auth"]):
        refused = fan_out(other, 1)
        late = fan_out(hurried, 9)
    # Assert: nobody delivered; each owner's reason says why.
    assert refused[0] == [] and set(refused[1]) == set(OWNERS)
    assert all("Failed" in reason for reason in refused[1].values())
    assert late[0] == [] and all("round_timeout_s=0.5" in r for r in late[1].values())


def test_down_stops_every_process_and_keeps_the_data(dist: dict[str, Any]) -> None:
    # Prepare
    comps = stack.components(dist["state"])
    # Execute
    result = CliRunner().invoke(app, ["stack", "down", "--dir", str(dist["stack_dir"])])
    # Assert: none of the pids `up` started is running; the databases are still there.
    assert result.exit_code == 0, result.output
    assert [c.name for c in comps][::-1] == [line.split()[0] for line in result.output.splitlines()]
    for comp in comps:
        assert not stack.is_alive(comp)
        with pytest.raises(ProcessLookupError):
            os.kill(comp.pid, 0)
    assert (dist["stack_dir"] / "prefect" / "prefect.db").is_file()
    assert (dist["stack_dir"] / "mlflow" / "mlflow.db").is_file()
    status = CliRunner().invoke(app, ["stack", "status", "--dir", str(dist["stack_dir"])])
    assert "alive" not in status.output and status.output.count("stopped") == len(comps)
