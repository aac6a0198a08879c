"""What bench/distributed.py watches and runs: commit times in the store, `fgrpo run`, model loads."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fgrpo_io import layout  # noqa: E402

POLL_S = 0.05


class CommitWatch:
    """Records when each round's state object first appears in the store (a 20 Hz poll)."""

    def __init__(self, exists: Callable[[str], bool], keys: list[str]) -> None:
        self.seen: dict[int, float] = {}
        self._exists, self._keys = exists, keys
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> CommitWatch:
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set() and len(self.seen) < len(self._keys):
            for t, key in enumerate(self._keys, start=1):
                if t not in self.seen:
                    try:
                        if self._exists(key):
                            self.seen[t] = time.perf_counter() - self.started
                    except Exception:  # the store is not up yet: try again
                        pass
            time.sleep(POLL_S)

    def steady_per_round_s(self, rounds: int) -> float:
        """Per-round time of the last two rounds (round R-2's commit to round R's), or of the last."""
        span = 2 if rounds >= 3 else 1
        return (self.seen[rounds] - self.seen[rounds - span]) / span


def fgrpo_run(config: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fgrpo_app.cli", "run", "--config", str(config), "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"fgrpo run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    # The summary is the last JSON document on stdout (log lines may come before it).
    start = proc.stdout.find("\n{")
    text = proc.stdout if proc.stdout.startswith("{") else proc.stdout[start + 1 :]
    try:
        return wall, json.loads(text)
    except json.JSONDecodeError as err:
        raise RuntimeError(f"fgrpo run printed no JSON summary:\n{proc.stdout[-3000:]}") from err


def env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines() if "=" in line
    )
    return {k: v for k, v in pairs}


class S3View:
    """The coordinator's read access to the stack's bucket, from this process."""

    def __init__(self, env: dict[str, str]) -> None:
        import boto3
        import botocore.config

        self.client = boto3.client(
            "s3",
            endpoint_url=env["FGRPO_S3_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )

    def exists(self, key: str) -> bool:
        return int(self.client.list_objects_v2(Bucket="fgrpo", Prefix=key).get("KeyCount", 0)) > 0

    def read(self, key: str) -> Any:
        return json.loads(self.client.get_object(Bucket="fgrpo", Key=key)["Body"].read())


def model_loads(env: dict[str, str], s3: S3View, name: str, owners: list[str]) -> dict[str, Any]:
    """Per owner: the loads its session reports count, else one per client flow run (main's code)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    async def runs() -> list[Any]:
        async with get_client() as client:
            names = FlowFilter(name=FlowFilterName(any_=["fgrpo-client"]))
            return await client.read_flow_runs(flow_filter=names)

    updates = {
        PREFECT_API_URL: env["PREFECT_API_URL"],
        PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"],
    }
    with temporary_settings(updates=updates):
        flow_runs = asyncio.run(runs())
    out: dict[str, Any] = {}
    for owner in owners:
        mine = [r for r in flow_runs if r.parameters.get("client_id") == owner]
        # A warm owner run (parameter "session") reports its process's loads; main's runs did not.
        sessions = [r.parameters["session"] for r in mine if "session" in r.parameters]
        keys = [layout.owner_session_key("fgrpo", name, owner, s) for s in sessions]
        reports = [s3.read(k) for k in keys if s3.exists(k)]
        if sessions:
            loads = sum(int(r["model_loads"]) for r in reports)
            how = "counted by the owner process" + (
                "" if len(reports) == len(sessions) else " (a run wrote no report)"
            )
        else:
            loads, how = len(mine), "one per flow-run process"
        out[owner] = {"flow_runs": len(mine), "model_loads": loads, "counted_by": how}
    return out
