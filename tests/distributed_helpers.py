"""Helpers of tests/test_distributed.py: the stack's config, its env files, its clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fgrpo_app import stack
from fgrpo_app.cli import app
from fgrpo_io.s3_store import S3Store
from tests.conftest import tiny_config

OWNERS = ("owner-a", "owner-b")
BUCKET = "fgrpo-dist"


def dist_config(model_cache: Path, out: Path) -> dict[str, Any]:
    cfg = tiny_config(
        model_cache,
        out,
        store={"kind": "s3", "bucket": BUCKET, "prefix": "fgrpo"},
        federation={"rounds": 2, "min_clients": 2, "mode": "distributed", "round_timeout_s": 240},
        tracking={"enabled": False, "tracking_uri": None},
    )
    cfg["clients"] = [c for c in cfg["clients"] if c["id"] in OWNERS]
    return cfg


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines())
    return {k: v for k, v in pairs}


def prefect_settings(api_url: str, auth: str) -> Any:
    """The coordinator's Prefect client settings: the stack's API and its basic-auth string."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth})


def coordinator_store(dist: dict[str, Any], mp: pytest.MonkeyPatch) -> S3Store:
    for name, value in env_file(dist["stack_dir"] / "coordinator.env").items():
        mp.setenv(name, value)
    return S3Store(BUCKET, endpoint_url=dist["state"]["env"]["FGRPO_S3_ENDPOINT_URL"])


def owner_store(dist: dict[str, Any], owner: str, mp: pytest.MonkeyPatch) -> S3Store:
    for name, value in env_file(dist["stack_dir"] / "credentials" / f"{owner}.env").items():
        mp.setenv(name, value)
    return S3Store(BUCKET, endpoint_url=dist["state"]["env"]["FGRPO_S3_ENDPOINT_URL"])


def client_runs(dist: dict[str, Any], session: str) -> list[tuple[Any, list[Any]]]:
    """(flow run, its task runs) of every owner run of ``session``, read from the Prefect API."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId

    async def read() -> list[tuple[Any, list[Any]]]:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["fgrpo-client"]))
            )
            mine = [r for r in runs if r.parameters.get("session") == session]
            return [
                (
                    r,
                    await client.read_task_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id]))
                    ),
                )
                for r in mine
            ]

    with prefect_settings(dist["api_url"], dist["auth"]):
        return asyncio.run(read())


def stack_up(config: Path, stack_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """`fgrpo stack up` through the CLI; the stack's state and the coordinator's environment.

    The caller brings the stack down (``stack.down(stack_dir)``) whatever happens after.
    """
    up = CliRunner().invoke(app, ["stack", "up", "--config", str(config), "--dir", str(stack_dir)])
    assert up.exit_code == 0, up.output + repr(up.exception)
    state = stack.read_state(stack_dir)
    assert state is not None
    return state, env_file(stack_dir / "coordinator.env")
