"""Distributed mode: a warm owner still training when its round closes stops, uploads nothing, goes on.

Through `fgrpo stack up` (Prefect server with auth, moto S3 with IAM, a worker per owner). Owner-b's
reward sleeps at every call, so its training takes many seconds; the coordinator closes round 1
once owner-a delivered and owner-b is training it, then runs round 2 to the end. Owner-b stops
round 1 at its next step (flows/owner.py, tasks/train.py: `rendezvous.RoundWatch`).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from fgrpo_app import stack
from fgrpo_core.config import ExperimentConfig, load_config
from fgrpo_io import exchange, layout, rendezvous
from fgrpo_io.rendezvous import SessionReport
from flows.owner_sessions import gather, serving_owners
from tests.distributed_helpers import client_runs, coordinator_store, dist_config, prefect_settings, stack_up

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEP_SLEEP_S = 0.5
SLOW_REWARD = f"""
import time
from fgrpo_core.rewards import partial_credit

def slow(completions, **kwargs):
    time.sleep({STEP_SLEEP_S})  # one call a training step: a step takes at least this long
    return partial_credit(completions, **kwargs)
"""


def _task_run(dist: dict[str, Any], session: str, name: str) -> Any:
    """The task run ``name`` of ``session``'s owner runs, None while it does not exist."""
    found = [t for _, tasks in client_runs(dist, session) for t in tasks if t.name == name]
    return found[0] if found else None


def _commit(cfg: ExperimentConfig, t: int, delivered: list[str], failed: dict[str, str]) -> dict[str, Any]:
    from tasks.aggregate import aggregate_task, commit_task
    from tasks.evaluate_global import evaluate_candidate_task

    candidate = aggregate_task.fn(cfg, t, delivered, failed)
    result = commit_task.fn(cfg, candidate, evaluate_candidate_task.fn(cfg, candidate))
    return {"delivered": delivered, "failed": failed, **result.model_dump()}


def test_an_owner_training_a_closed_round_stops_and_serves_the_next(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: 20 local steps for both owners; owner-b's steps take >= 0.5 s each (its reward).
    from tasks.aggregate import initialise_task
    from tasks.evaluate_global import initial_evaluation_task

    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "slow.py").write_text(SLOW_REWARD)
    raw = dist_config(model_cache, tmp_path / "out")
    raw["name"] = "cancel-test"
    raw["grpo"] = {**raw["grpo"], "local_steps": 20}
    raw["federation"] = {**raw["federation"], "min_clients": 1}
    raw["clients"][1] = {**raw["clients"][1], "reward": "rewards/slow.py:slow", "reward_range": [0, 10]}
    config_path = tmp_path / "cancel.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    cfg = load_config(config_path)  # the reward file is found next to it
    hurried = cfg.model_copy(
        update={"federation": cfg.federation.model_copy(update={"round_timeout_s": 0.5})}
    )
    stack_dir = tmp_path / "stack"
    try:
        state, coordinator = stack_up(config_path, stack_dir)
        dist = {"stack_dir": stack_dir, "state": state, "api_url": state["env"]["PREFECT_API_URL"]}
        dist["auth"] = coordinator["PREFECT_API_AUTH_STRING"]
        store = coordinator_store(dist, monkeypatch)
        ident = exchange.identity(cfg)
        with prefect_settings(dist["api_url"], dist["auth"]):
            initialise_task.fn(cfg)
            initial_evaluation_task.fn(cfg)
            with serving_owners(cfg, 1, 2) as session:
                # Execute: round 1 closes (a 0.5 s deadline) once owner-a delivered and owner-b
                # has trained round 1 for a few seconds (past its first evaluation).
                a_delivered = layout.client_manifest_key("fgrpo", cfg.name, "owner-a", 1)
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    b_train = _task_run(dist, session.id, "train-owner-b-round-1")
                    running = b_train is not None and b_train.state.is_running()
                    if running and store.exists(a_delivered):
                        since = (datetime.now(UTC) - b_train.state.timestamp).total_seconds()
                        if since >= 3:
                            break
                    time.sleep(0.5)
                round_1 = gather(hurried, session, 1)
                closed_at = datetime.now(UTC)  # the marker was written just before gather returned
                rounds = [_commit(cfg, 1, *round_1), _commit(cfg, 2, *gather(cfg, session, 2))]
        reports = {o: rendezvous.read_report(store, ident, o, session.id) for o in ("owner-a", "owner-b")}
        cancelled = _task_run(dist, session.id, "train-owner-b-round-1")
        full = _task_run(dist, session.id, "train-owner-b-round-2")
        # What owner-b left of round 1: no manifest, delta, failure record or failure note.
        keys = (layout.client_manifest_key, layout.client_delta_key, layout.client_failure_key)
        left = [k("fgrpo", cfg.name, "owner-b", 1) for k in (*keys, layout.client_failure_note_key)]
        left = [key for key in left if store.exists(key)]
    finally:
        stack.down(stack_dir)
    # Assert: owner-b's round 1 is cancelled, not failed, and nothing of it is in the store.
    assert reports["owner-b"] == SessionReport(
        client_id="owner-b",
        session=session.id,
        flow_run_id=session.runs["owner-b"],
        trained=[2],
        cancelled=[1],
        model_loads=1,
    )
    assert reports["owner-a"] is not None and reports["owner-a"].trained == [1, 2]
    assert left == []
    message = cancelled.state.message
    reached = re.search(r"closed it .* while this owner trained it: stopped after step (\d+) of 20", message)
    assert cancelled.state.is_cancelled() and reached and message.endswith("nothing uploaded"), message
    # It stopped mid-training, within a step or two of the close, long before the training's end.
    stop_s = (cancelled.state.timestamp - closed_at).total_seconds()
    full_s = (full.state.timestamp - full.start_time).total_seconds()
    print(
        f"owner-b stopped round 1 at step {reached[1]} of 20, {stop_s:.2f} s after it closed; "
        f"a whole training (round 2) took {full_s:.1f} s"
    )
    assert 1 <= int(reached[1]) < 20
    assert 0 <= stop_s < 8 and stop_s < full_s / 4, (stop_s, full_s)
    # Round 1 committed without owner-b (late), round 2 with both.
    assert [r["status"] for r in rounds] == ["committed", "committed"]
    assert rounds[0]["delivered"] == ["owner-a"] and "round_timeout_s=0.5" in rounds[0]["failed"]["owner-b"]
    assert rounds[1]["delivered"] == ["owner-a", "owner-b"] and rounds[1]["failed"] == {}
    assert [r["accepted"] for r in rounds[1]["rows"]] == [True, True]
