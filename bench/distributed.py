"""A distributed experiment (Prefect server, one worker per owner, S3 server, MLflow server) against
the same experiment on embedded defaults, side by side on this machine.

    .venv/bin/python bench/distributed.py [--config configs/tiny.yaml] [--rounds 4]

Both runs are `fgrpo run --json` subprocesses on the same config, seeds and warm model cache;
only `federation.mode`, the store and the tracking server differ. `fgrpo stack up` starts the
distributed topology on 127.0.0.1 first (not timed) and `down` stops it afterwards.

Besides each run's wall time, a thread of this process watches the store for each round's state
object (the commit): the steady state is the time from round R-2's commit to round R's, per
round, without process start, initialisation and the first round. The model loads of each owner
are counted: from the owner's session report in the store (warm owners report their process's
loads), else one per client flow run (each a fresh process that loads the model). Writes
bench/results/distributed.json and .md with a top-level `headline`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fgrpo_app import stack  # noqa: E402
from fgrpo_core.config import parse_config  # noqa: E402
from fgrpo_core.models import load_bundle  # noqa: E402
from fgrpo_io import layout  # noqa: E402
from fgrpo_io.environment import child_env  # noqa: E402

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


def _fgrpo_run(config: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
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


def _env_file(path: Path) -> dict[str, str]:
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


def _model_loads(env: dict[str, str], s3: S3View, name: str, owners: list[str]) -> dict[str, Any]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    parser.add_argument("--label", default="", help="What code this run measures (e.g. a commit).")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="fgrpo-dist-bench-"))
    raw = yaml.safe_load(Path(args.config).read_text())
    raw["output_dir"] = str(work / "out")
    raw["model"]["cache_dir"] = str(work / "model-cache")
    raw["federation"] = {**raw.get("federation", {}), "rounds": args.rounds, "round_timeout_s": 900}
    embedded = {**raw, "store": {"kind": "local", "root": str(work / "store")}}
    distributed = {
        **raw,
        "federation": {**raw["federation"], "mode": "distributed"},
        "store": {"kind": "s3", "bucket": "fgrpo", "prefix": "fgrpo"},
    }
    emb_path, dist_path = work / "embedded.yaml", work / "distributed.yaml"
    emb_path.write_text(yaml.safe_dump(embedded))
    dist_path.write_text(yaml.safe_dump(distributed))
    load_bundle(parse_config(embedded))  # warm the model cache both modes read
    owners = [c["id"] for c in raw["clients"]]
    name = raw["name"]

    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_", "FGRPO_"))
    }
    base = child_env(base)
    stack_dir = work / "stack"
    loadavg_start = list(os.getloadavg())
    t0 = time.perf_counter()
    stack.up(parse_config(distributed), dist_path, stack_dir)
    stack_up_s = time.perf_counter() - t0
    state_keys = [layout.state_key("fgrpo", name, t) for t in range(1, args.rounds + 1)]
    try:
        dist_env = base | _env_file(stack_dir / "coordinator.env")
        s3 = S3View(dist_env)
        with CommitWatch(s3.exists, state_keys) as dist_watch:
            dist_wall, dist_summary = _fgrpo_run(dist_path, dist_env)
        loads = _model_loads(dist_env, s3, name, owners)
        emb_env = base | {"PREFECT_HOME": str(work / "prefect-home")}
        store_root = work / "store"
        with CommitWatch(lambda k: (store_root / k).exists(), state_keys) as emb_watch:
            emb_wall, emb_summary = _fgrpo_run(emb_path, emb_env)
    finally:
        stack.down(stack_dir)
    loadavg_end = list(os.getloadavg())

    def macro(summary: dict[str, Any]) -> list[float]:
        return [r["evaluation"]["macro_accuracy"] for r in summary["rounds"]]

    dist_steady, emb_steady = (
        dist_watch.steady_per_round_s(args.rounds),
        emb_watch.steady_per_round_s(args.rounds),
    )
    per_owner = sorted({v["model_loads"] for v in loads.values()})
    result = {
        "headline": {
            "distributed_over_embedded": dist_steady / emb_steady,
            "model_loads_per_owner_per_experiment": per_owner[0] if len(per_owner) == 1 else per_owner,
        },
        "label": args.label,
        "config": args.config,
        "rounds": args.rounds,
        "owners": len(owners),
        "stack_up_s": stack_up_s,
        "steady_state": f"per round, from round {args.rounds - (2 if args.rounds >= 3 else 1)}'s commit to round {args.rounds}'s",
        "steady_per_round_embedded_s": emb_steady,
        "steady_per_round_distributed_s": dist_steady,
        "commit_times_embedded_s": emb_watch.seen,
        "commit_times_distributed_s": dist_watch.seen,
        "embedded_wall_s": emb_wall,
        "distributed_wall_s": dist_wall,
        "wall_ratio": dist_wall / emb_wall,
        "model_loads_distributed": loads,
        "macro_accuracy_embedded": macro(emb_summary),
        "macro_accuracy_distributed": macro(dist_summary),
        "timings_embedded": emb_summary.get("timings"),
        "timings_distributed": dist_summary.get("timings"),
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg_end,
    }
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distributed.json").write_text(json.dumps(result, indent=1))
    per_owner_text = "; ".join(
        f"{o}: {v['model_loads']} over {v['flow_runs']} flow runs, {v['counted_by']}"
        for o, v in loads.items()
    )
    md = [
        "# Distributed against embedded, same experiment, same machine",
        "",
        f"`bench/distributed.py --config {Path(args.config).name} --rounds {args.rounds}` ({args.label or 'this tree'}): "
        f"{len(owners)} owners, {os.cpu_count()} CPUs, load average {loadavg_start[0]:.2f} at start and "
        f"{loadavg_end[0]:.2f} at the end. Steady state: {result['steady_state']}; wall: `fgrpo run` including process start.",
        "",
        "| mode | steady s / round | wall s | macro accuracy per round |",
        "|---|---|---|---|",
        f"| embedded (ephemeral Prefect, local store, MLflow SQLite) | {emb_steady:.1f} | {emb_wall:.1f} | "
        f"{', '.join(f'{a:.3f}' for a in result['macro_accuracy_embedded'])} |",
        f"| distributed (Prefect server + {len(owners)} workers, S3 server, MLflow server) | {dist_steady:.1f} | "
        f"{dist_wall:.1f} | {', '.join(f'{a:.3f}' for a in result['macro_accuracy_distributed'])} |",
        "",
        f"Distributed / embedded in steady state: **{dist_steady / emb_steady:.2f}** (wall: {dist_wall / emb_wall:.2f}). "
        f"Base-model loads per owner in the experiment: **{result['headline']['model_loads_per_owner_per_experiment']}** "
        f"({per_owner_text}). "
        f"`fgrpo stack up` itself (not timed above): {stack_up_s:.0f} s.",
    ]
    (out / "distributed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
