"""Distributed mode: an owner whose reward raises fails permanently; the round goes on without it.

Through the real path: `fgrpo stack up` (Prefect server with auth, moto S3 with IAM, a worker per
owner), then `fgrpo run` as the coordinator. Owner-b's reward raises on every call: its own
pre-flight (flows/owner.py) records `permanent: reward: ...` under its prefix, the coordinator's
round table, summary and Prefect artifact say so, and `fgrpo run` exits 3.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fgrpo_app import stack
from fgrpo_app.cli import app
from fgrpo_app.cli_common import EXIT_OWNER_FAILED
from fgrpo_io import layout
from fgrpo_io.s3_store import S3Store
from tests.conftest import tiny_config
from tests.distributed_helpers import stack_up

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "fgrpo-fail"
BROKEN_REWARD = """
def boom(completions, **kwargs):
    raise ValueError("reward service key missing: set REWARD_KEY")
"""


async def _round_one(experiment: str) -> tuple[list[Any], list[Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowFilter, FlowFilterName

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["fgrpo-client"])))
        key = ArtifactFilterKey(any_=[f"{experiment}-round-0001"])
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=key))
    return runs, artifacts


def test_owner_with_a_raising_reward_fails_permanently(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: owner-a is sound; owner-b's reward (a file next to the config) raises.
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "broken.py").write_text(BROKEN_REWARD)
    raw = tiny_config(
        model_cache,
        tmp_path / "out",
        name="fail-test",
        store={"kind": "s3", "bucket": BUCKET, "prefix": "fgrpo"},
        federation={"rounds": 1, "min_clients": 1, "mode": "distributed", "round_timeout_s": 240},
        tracking={"enabled": False, "tracking_uri": None},
    )
    raw["clients"] = [
        raw["clients"][0],
        {**raw["clients"][1], "reward": "rewards/broken.py:boom", "reward_range": [0, 1]},
    ]
    config = tmp_path / "fail.yaml"
    config.write_text(yaml.safe_dump(raw))
    stack_dir = tmp_path / "stack"
    try:
        state, coordinator = stack_up(config, stack_dir)
        for name, value in coordinator.items():
            monkeypatch.setenv(name, value)
        api = {
            PREFECT_API_URL: state["env"]["PREFECT_API_URL"],
            PREFECT_API_AUTH_STRING: coordinator["PREFECT_API_AUTH_STRING"],
        }
        with temporary_settings(updates=api):
            # Execute: the coordinator's `fgrpo run`
            ran = CliRunner().invoke(app, ["run", str(config)])
            runs, artifacts = asyncio.run(_round_one("fail-test"))
        store = S3Store(BUCKET, endpoint_url=state["env"]["FGRPO_S3_ENDPOINT_URL"])
        result = json.loads(store.get_bytes(layout.round_result_key("fgrpo", "fail-test", 1)))
        recorded = json.loads(store.get_bytes(layout.client_failure_key("fgrpo", "fail-test", "owner-b", 1)))
    finally:
        stack.down(stack_dir)
    # Assert: round 1 committed with owner-a alone; owner-b's row, record and summary line say why.
    assert ran.exit_code == EXIT_OWNER_FAILED, ran.output + repr(ran.exception)
    rows = {row["client_id"]: row for row in result["rows"]}
    assert result["status"] == "committed" and rows["owner-a"]["accepted"]
    reason = rows["owner-b"]["reason"]
    assert not rows["owner-b"]["accepted"]
    assert reason.startswith("permanent: reward: the reward failed on 4 of its examples: ValueError:")
    assert "set REWARD_KEY" in reason
    assert recorded["kind"] == "reward" and recorded["round"] == 1
    assert f"owner failed: owner-b in round 1: {reason}" in ran.output
    # The Prefect artifact names the owner; its run failed once (a permanent error is not retried).
    assert len(artifacts) == 1 and f"- **owner-b**: {reason}" in artifacts[0].data
    mine = [r for r in runs if r.parameters["client_id"] == "owner-b"]
    assert len(mine) == 1 and mine[0].state.is_failed() and "OwnerError" in mine[0].state.message
