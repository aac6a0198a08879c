"""A distributed experiment (Prefect server, one worker per owner, S3 server, MLflow server) against
the same experiment embedded, on the same servers and on embedded defaults, side by side.

    .venv/bin/python bench/distributed.py [--config configs/tiny.yaml] [--rounds 4]

The four runs are `fgrpo run --json` subprocesses on the same config, seeds and warm model cache:
distributed; embedded on the stack's Prefect, S3 and MLflow servers (only `federation.mode`
differs: the headline `distributed_over_embedded`); the same with the owners training at once in
worker processes, as distributed owners do (`distributed_over_embedded_parallel`); embedded on a
local store, ephemeral Prefect and MLflow on SQLite (`distributed_over_embedded_local`).
`fgrpo stack up` starts the topology on 127.0.0.1 first (not timed) and `down` stops it after.

Besides each run's wall time, a thread of this process watches the store for each round's state
object (the commit): the steady state is the time from round R-2's commit to round R's, per
round, without process start, initialisation and the first round. The model loads of each owner
are counted: from the owner's session report in the store (warm owners report their process's
loads), else one per client flow run (each a fresh process that loads the model). Writes
bench/results/distributed.json and .md with a top-level `headline`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.distributed_probe import CommitWatch, S3View, env_file, fgrpo_run, model_loads  # noqa: E402
from fgrpo_app import stack  # noqa: E402
from fgrpo_core.config import parse_config  # noqa: E402
from fgrpo_core.models import load_bundle  # noqa: E402
from fgrpo_io import layout  # noqa: E402
from fgrpo_io.environment import child_env  # noqa: E402

# The embedded run on the stack's servers: its own key prefix and MLflow experiment.
STACK_PREFIX = "fgrpo-embedded"


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
    on_stack = {
        **raw,
        "name": f"{raw['name']}-on-stack",
        "store": {"kind": "s3", "bucket": "fgrpo", "prefix": STACK_PREFIX},
    }
    # Distributed owners train at the same time, each in its process; embedded ones, by default,
    # one after another in the coordinator's. This arm trains them at once too (owner_processes).
    parallel = {
        **on_stack,
        "name": f"{raw['name']}-on-stack-parallel",
        "federation": {**raw["federation"], "owner_processes": len(raw["clients"])},
    }
    emb_path, dist_path, stack_path, par_path = (
        work / "embedded.yaml",
        work / "distributed.yaml",
        work / "on-stack.yaml",
        work / "on-stack-parallel.yaml",
    )
    emb_path.write_text(yaml.safe_dump(embedded))
    dist_path.write_text(yaml.safe_dump(distributed))
    stack_path.write_text(yaml.safe_dump(on_stack))
    par_path.write_text(yaml.safe_dump(parallel))
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
        dist_env = base | env_file(stack_dir / "coordinator.env")
        s3 = S3View(dist_env)
        with CommitWatch(s3.exists, state_keys) as dist_watch:
            dist_wall, dist_summary = fgrpo_run(dist_path, dist_env)
        loads = model_loads(dist_env, s3, name, owners)
        # Embedded on the same Prefect, S3 and MLflow servers: the mode alone differs from above.
        stack_keys = [layout.state_key(STACK_PREFIX, on_stack["name"], t) for t in range(1, args.rounds + 1)]
        with CommitWatch(s3.exists, stack_keys) as stack_watch:  # the stack's Prefect server too
            stack_wall, stack_summary = fgrpo_run(stack_path, dist_env)
        par_keys = [layout.state_key(STACK_PREFIX, parallel["name"], t) for t in range(1, args.rounds + 1)]
        with CommitWatch(s3.exists, par_keys) as par_watch:
            par_wall, par_summary = fgrpo_run(par_path, dist_env)
        emb_env = base | {"PREFECT_HOME": str(work / "prefect-home")}
        store_root = work / "store"
        with CommitWatch(lambda k: (store_root / k).exists(), state_keys) as emb_watch:
            emb_wall, emb_summary = fgrpo_run(emb_path, emb_env)
    finally:
        stack.down(stack_dir)
    loadavg_end = list(os.getloadavg())

    def macro(summary: dict[str, Any]) -> list[float]:
        return [r["evaluation"]["macro_accuracy"] for r in summary["rounds"]]

    dist_steady, emb_steady, stack_steady, par_steady = (
        dist_watch.steady_per_round_s(args.rounds),
        emb_watch.steady_per_round_s(args.rounds),
        stack_watch.steady_per_round_s(args.rounds),
        par_watch.steady_per_round_s(args.rounds),
    )
    per_owner = sorted({v["model_loads"] for v in loads.values()})
    result = {
        "headline": {
            # The mode's cost: embedded on the same servers. Against the local store and SQLite too.
            "distributed_over_embedded": dist_steady / stack_steady,
            "distributed_over_embedded_local": dist_steady / emb_steady,
            # Both train the owners at once: the orchestration's cost, parallelism aside.
            "distributed_over_embedded_parallel": dist_steady / par_steady,
            "model_loads_per_owner_per_experiment": per_owner[0] if len(per_owner) == 1 else per_owner,
        },
        "label": args.label,
        "config": args.config,
        "rounds": args.rounds,
        "owners": len(owners),
        "stack_up_s": stack_up_s,
        "steady_state": f"per round, from round {args.rounds - (2 if args.rounds >= 3 else 1)}'s commit to round {args.rounds}'s",
        "steady_per_round_embedded_s": emb_steady,
        "steady_per_round_embedded_on_stack_s": stack_steady,
        "steady_per_round_embedded_parallel_s": par_steady,
        "embedded_parallel_wall_s": par_wall,
        "commit_times_embedded_parallel_s": par_watch.seen,
        "macro_accuracy_embedded_parallel": macro(par_summary),
        "steady_per_round_distributed_s": dist_steady,
        "commit_times_embedded_s": emb_watch.seen,
        "commit_times_distributed_s": dist_watch.seen,
        "embedded_wall_s": emb_wall,
        "embedded_on_stack_wall_s": stack_wall,
        "commit_times_embedded_on_stack_s": stack_watch.seen,
        "distributed_wall_s": dist_wall,
        "wall_ratio": dist_wall / emb_wall,
        "model_loads_distributed": loads,
        "macro_accuracy_embedded": macro(emb_summary),
        "macro_accuracy_embedded_on_stack": macro(stack_summary),
        "macro_accuracy_distributed": macro(dist_summary),
        "timings_embedded": emb_summary.get("timings"),
        "timings_embedded_on_stack": stack_summary.get("timings"),
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
        f"| embedded on the stack's Prefect, S3 and MLflow servers | {stack_steady:.1f} | {stack_wall:.1f} | "
        f"{', '.join(f'{a:.3f}' for a in result['macro_accuracy_embedded_on_stack'])} |",
        f"| embedded on the same servers, owners at once in {len(owners)} worker processes "
        f"(`owner_processes: {len(owners)}`) | {par_steady:.1f} | {par_wall:.1f} | "
        f"{', '.join(f'{a:.3f}' for a in result['macro_accuracy_embedded_parallel'])} |",
        f"| distributed (Prefect server + {len(owners)} workers, S3 server, MLflow server) | {dist_steady:.1f} | "
        f"{dist_wall:.1f} | {', '.join(f'{a:.3f}' for a in result['macro_accuracy_distributed'])} |",
        "",
        f"Distributed / embedded on the same servers in steady state: **{dist_steady / stack_steady:.2f}** "
        f"(wall: {dist_wall / stack_wall:.2f}); against embedded on a local store and SQLite: "
        f"{dist_steady / emb_steady:.2f} (wall: {dist_wall / emb_wall:.2f}); against embedded with "
        f"the owners at once, on the same servers: {dist_steady / par_steady:.2f} (wall: {dist_wall / par_wall:.2f}). "
        "Distributed owners train at the same time, each in its own process; embedded ones, by default, "
        "one after another in the coordinator's process (`max_parallel_clients: 1`: reproducible). "
        f"Base-model loads per owner in the experiment: **{result['headline']['model_loads_per_owner_per_experiment']}** "
        f"({per_owner_text}). "
        f"`fgrpo stack up` itself (not timed above): {stack_up_s:.0f} s.",
    ]
    (out / "distributed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
