"""Distributed mode through `fgrpo stack up`: real Prefect server, one worker per owner, moto S3 with IAM.

The coordinator (this test process) initialises theta_0, starts one warm run per owner for the
experiment (`flows.owner_sessions.serving_owners`), gathers each round's deliveries from the store
and aggregates; the owners train in their workers' flow-run processes with their own credentials
and config, loading the base model once for both rounds.
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
from fgrpo_io import exchange, layout, rendezvous
from fgrpo_io.rendezvous import SessionReport
from fgrpo_io.store import StoreAccessDeniedError
from flows.owner_sessions import OwnerSession, gather, serving_owners
from tests.distributed_helpers import (
    OWNERS,
    client_runs,
    coordinator_store,
    dist_config,
    env_file,
    owner_store,
    prefect_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[dict[str, Any]]:
    """`fgrpo stack up` with 2 owners, then two distributed rounds; `down` at the end in any case."""
    from tasks.aggregate import aggregate_task, commit_task, initialise_task
    from tasks.evaluate_global import evaluate_candidate_task, initial_evaluation_task

    # Prepare: the experiment config every site shares (here one file on one machine).
    out = tmp_path_factory.mktemp("distributed")
    raw = dist_config(model_cache, out)
    config_path = out / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    cfg = parse_config(raw)
    stack_dir = out / "stack"
    result = CliRunner().invoke(app, ["stack", "up", "--config", str(config_path), "--dir", str(stack_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    state = stack.read_state(stack_dir)
    assert state is not None
    coordinator = env_file(stack_dir / "coordinator.env")
    try:
        with (
            pytest.MonkeyPatch.context() as mp,
            prefect_settings(state["env"]["PREFECT_API_URL"], coordinator["PREFECT_API_AUTH_STRING"]),
        ):
            for name, value in coordinator.items():
                mp.setenv(name, value)
            # Execute: the coordinator's loop of the round flow in distributed mode.
            initialise_task.fn(cfg)  # also warms the shared model cache before the owners load it
            initial_evaluation_task.fn(cfg)
            rounds = []
            with serving_owners(cfg, 1, 2) as session:
                for t in (1, 2):
                    delivered, failed = gather(cfg, session, t)
                    candidate = aggregate_task.fn(cfg, t, delivered, failed)
                    committed = commit_task.fn(cfg, candidate, evaluate_candidate_task.fn(cfg, candidate))
                    rounds.append({"delivered": delivered, "failed": failed, **committed.model_dump()})
            yield {
                "cfg": cfg,
                "rounds": rounds,
                "session": session,
                "stack_dir": stack_dir,
                "state": state,
                "config_path": config_path,
                "up_output": result.output,
                "api_url": state["env"]["PREFECT_API_URL"],
                "auth": coordinator["PREFECT_API_AUTH_STRING"],
            }
    finally:
        stack.down(stack_dir)


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
        store = coordinator_store(dist, mp)
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


def test_each_owner_served_both_rounds_from_one_run_on_its_own_pool(dist: dict[str, Any]) -> None:
    # Prepare
    session: OwnerSession = dist["session"]
    # Execute
    runs = client_runs(dist, session.id)
    # Assert: one completed run per owner, on pool owner-<id>; the coordinator passed no path
    # and no data, only the owner, the experiment's name, the session and the rounds.
    assert sorted(r.parameters["client_id"] for r, _ in runs) == list(OWNERS)
    for run, task_runs in runs:
        owner = run.parameters["client_id"]
        assert run.state is not None and run.state.is_completed()
        assert run.work_pool_name == f"owner-{owner}"
        assert str(run.id) == session.runs[owner]
        assert set(run.parameters) == {"client_id", "experiment", "session", "first_round", "last_round"}
        # Each round is a task run of its own (state, logs, retries) inside the owner's run.
        done = {t.name: t.state.name for t in task_runs if t.state is not None}
        assert done[f"train-{owner}-round-1"] == done[f"train-{owner}-round-2"] == "Completed"


def test_one_base_model_load_per_owner_per_experiment(dist: dict[str, Any]) -> None:
    # Prepare
    session: OwnerSession = dist["session"]
    ident = exchange.identity(dist["cfg"])
    # Execute: what each owner's process counted and wrote under its own prefix on exit.
    with pytest.MonkeyPatch.context() as mp:
        store = coordinator_store(dist, mp)
        reports = {o: rendezvous.read_report(store, ident, o, session.id) for o in OWNERS}
    # Assert: both rounds trained in one process that loaded the base model exactly once.
    for owner, report in reports.items():
        assert report == SessionReport(
            client_id=owner,
            session=session.id,
            flow_run_id=session.runs[owner],
            trained=[1, 2],
            model_loads=1,
        )


def test_owner_credentials_cannot_write_another_owners_prefix(dist: dict[str, Any]) -> None:
    # Prepare: moto enforces the IAM policy of owner-a's own key pair.
    name = dist["cfg"].name
    with pytest.MonkeyPatch.context() as mp:
        alice = owner_store(dist, "owner-a", mp)
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
        admin = coordinator_store(dist, mp)
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
        alice = owner_store(dist, "owner-a", mp)
        for t, manifest in forged.items():
            alice.put_bytes(
                layout.client_manifest_key("fgrpo", cfg.name, "owner-a", t),
                manifest.model_dump_json().encode(),
            )
    # Execute / Assert: the coordinator's manifest check refuses both.
    with pytest.MonkeyPatch.context() as mp:
        admin = coordinator_store(dist, mp)
        theta = exchange.read_global(admin, ident, 2)
        for t, needle in ((3, "owner-b"), (4, "outside its owner's own prefix")):
            expected = exchange.expected_update(ident, t, "owner-a", theta, cfg.federation.delta_dtype)
            with pytest.raises(DeltaValidationError, match=needle):
                exchange.read_client_delta(admin, ident, expected)


def test_refusing_or_late_owners_do_not_block_a_round(dist: dict[str, Any]) -> None:
    # Prepare: the coordinator asks for an experiment the owners' configs do not hold, then
    # gives a round (5: theta_4 does not exist yet) half a second.
    import time

    cfg: ExperimentConfig = dist["cfg"]
    other = cfg.model_copy(update={"name": "not-this-one"})
    hurried = cfg.model_copy(
        update={"federation": cfg.federation.model_copy(update={"round_timeout_s": 0.5})}
    )
    ident = exchange.identity(cfg)
    # Execute
    with prefect_settings(dist["api_url"], dist["auth"]), pytest.MonkeyPatch.context() as mp:
        store = coordinator_store(dist, mp)  # also the coordinator's credentials for gather
        started = time.monotonic()
        with serving_owners(other, 1, 1) as session:
            refused = gather(other, session, 1)
        refused_s = time.monotonic() - started
        with serving_owners(hurried, 5, 5) as late_session:
            started = time.monotonic()
            late = gather(hurried, late_session, 5)
            late_s = time.monotonic() - started
            # The owners start, load, see round 5 closed and exit by themselves.
            deadline = time.monotonic() + 180
            reports: dict[str, SessionReport | None] = {}
            while time.monotonic() < deadline and not all(reports.get(o) for o in OWNERS):
                reports = {o: rendezvous.read_report(store, ident, o, late_session.id) for o in OWNERS}
                time.sleep(1)
    # Assert: a refusing owner's run fails and the round stops waiting for it at once.
    assert refused[0] == [] and set(refused[1]) == set(OWNERS)
    assert all("Failed" in reason for reason in refused[1].values())
    assert refused_s < cfg.federation.round_timeout_s
    # A late owner costs the round its deadline, no more, and skips the closed round.
    assert late[0] == [] and all("round_timeout_s=0.5" in r for r in late[1].values())
    assert late_s < 5
    for owner in OWNERS:
        report = reports[owner]
        assert report is not None and (report.skipped, report.trained) == ([5], []), report
        assert not store.exists(layout.client_manifest_key("fgrpo", cfg.name, owner, 5))


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
