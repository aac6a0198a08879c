"""Many owners in embedded simulation: per-owner cost and fixed cost per round at K = 2 ... 64.

Every owner trains in one of ``--processes`` worker processes of a local Dask cluster
(``federation.owner_processes``; Prefect's DaskTaskRunner), one owner at a time per process, so
runs stay reproducible; each process loads the base model once for the experiment. Each K is a
new experiment on the same per-owner budget (the tiny config's model and GRPO settings, 16
training prompts per owner, families taken in turn). The first round pays the cluster's start and
the workers' model loads; the steady-state round (the last) is what is compared:

    round wall(K) = fixed + K x per_owner     (least squares over the K measured)

and each K's own per-owner cost is (round wall(K) - fixed) / K. Runs go one after another in
this process; the machine's load is recorded with each.

    .venv/bin/python -m bench.many_owners [--ks 2 8 32 64] [--processes 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fgrpo_io.environment import DEFAULTS

RESULTS = Path(__file__).parent / "results"
GOAL = 0.20  # K = 64's per-owner cost within 20% of K = 8's


def owners_config(base: Path, work: Path, k: int, processes: int, rounds: int) -> Any:
    """``base`` with K owners of 16 prompts each, in ``processes`` worker processes."""
    from fgrpo_core.config import load_config, parse_config

    raw = load_config(base).model_dump()
    families = raw["data"]["families"]
    raw["name"] = f"owners-{k}"
    raw["output_dir"] = str(work / "out")
    raw["clients"] = [
        {"id": f"owner-{i:02d}", "families": [families[i % len(families)]], "n_train": 16, "n_val": 8}
        for i in range(k)
    ]
    raw["aggregation"] = {**raw["aggregation"], "weight_cap": 1.0}
    raw["federation"] = {
        **raw["federation"],
        "rounds": rounds,
        "min_clients": 1,
        "owner_processes": processes,
    }
    raw["store"] = {**raw["store"], "kind": "local", "root": str(work / "out" / "store")}
    raw["tracking"] = {**raw["tracking"], "enabled": False}
    return parse_config(raw)


def run_one(cfg: Any) -> dict[str, Any]:
    """One experiment; the wall time of each round, from the round flow's commit events."""
    from fgrpo_io import prefect_settings, runtime, timing
    from flows.experiment import run_experiment

    marks: list[float] = []
    runtime.set_event_hook(
        lambda kind, _: marks.append(time.perf_counter()) if kind == runtime.ROUND_COMMITTED else None
    )
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        with prefect_settings.flow_settings(), timing.collect() as collected:
            summary = run_experiment(cfg)
    finally:
        runtime.set_event_hook(None)
    wall = time.perf_counter() - started
    edges = [started, *marks]
    return {
        "k": len(cfg.clients),
        "wall_s": round(wall, 3),
        "round_wall_s": [round(b - a, 3) for a, b in itertools.pairwise(edges)],
        "macro_accuracy": [round(r.macro_accuracy, 4) for r in summary.rounds],
        "accepted": [len(r.rows) - sum(not row.accepted for row in r.rows) for r in summary.rounds],
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        # Summed over the experiment's tasks (owners train 2 at a time: train_s is not wall time).
        "parts_s": {name: round(v, 3) for name, v in collected.totals.items()},
    }


def fit(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """(fixed, per_owner) of wall = fixed + K x per_owner by least squares."""
    n = len(points)
    mean_k = sum(k for k, _ in points) / n
    mean_w = sum(w for _, w in points) / n
    var = sum((k - mean_k) ** 2 for k, _ in points)
    slope = sum((k - mean_k) * (w - mean_w) for k, w in points) / var if var else 0.0
    return mean_w - slope * mean_k, slope


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steady = [(r["k"], r["round_wall_s"][-1]) for r in runs]
    fixed, per_owner = fit(steady) if len(steady) > 1 else (0.0, steady[0][1] / steady[0][0])
    # A fitted fixed cost below 0 is noise: then each K's cost is its whole round over K.
    base = max(0.0, fixed)
    per_k = {str(k): round((w - base) / k, 3) for k, w in steady}
    headline: dict[str, Any] = {
        "fixed_cost_per_round_s": round(fixed, 3),
        "per_owner_cost_s": round(per_owner, 3),
        "per_owner_cost_by_k_s": per_k,
    }
    if "8" in per_k and "64" in per_k:
        headline["per_owner_64_over_8"] = round(per_k["64"] / per_k["8"], 3)
    return headline


def markdown(result: dict[str, Any]) -> str:
    head = result["headline"]
    lines = [
        "# Many owners: embedded simulation in worker processes",
        "",
        f"{result['processes']} worker processes (Dask, one thread each), {result['rounds']} rounds, tiny model; "
        f"{result['machine']['cpus']} CPUs. Steady-state round = the last. Generated by `bench/many_owners.py`.",
        "",
        "| K | steady round (s) | per-owner cost (s) | first round (s) | train per owner-round, both rounds (s) | "
        "aggregate + evaluate per round (s) | accepted | 1-min load before / after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in result["runs"]:
        k, rounds, parts = str(run["k"]), len(run["round_wall_s"]), run.get("parts_s", {})
        train = parts.get("train_s", 0.0) / (run["k"] * rounds)
        coordinator = (parts.get("aggregate_s", 0.0) + parts.get("evaluate_s", 0.0)) / rounds
        lines.append(
            f"| {k} | {run['round_wall_s'][-1]:.1f} | {head['per_owner_cost_by_k_s'][k]:.2f} | "
            f"{run['round_wall_s'][0]:.1f} | {train:.2f} | {coordinator:.2f} | {run['accepted'][-1]} | "
            f"{run['load_1min'][0]} / {run['load_1min'][1]} |"
        )
    lines += [
        "",
        f"Fit: round wall = {head['fixed_cost_per_round_s']:.1f} s fixed + K x {head['per_owner_cost_s']:.2f} s "
        "(a fixed cost below 0 is noise: each K's per-owner cost is then its round over K).",
    ]
    if "per_owner_64_over_8" in head:
        ratio = head["per_owner_64_over_8"]
        verdict = "within" if abs(ratio - 1.0) <= GOAL else "outside"
        lines.append(f"Per-owner cost at K = 64 over K = 8: {ratio:.2f} ({verdict} the 20% goal).")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("configs/tiny.yaml"))
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 8, 32, 64])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first round pays the start-up)")
    work = Path(tempfile.mkdtemp(prefix="fgrpo-owners-"))
    for key, value in {**DEFAULTS, "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
        os.environ.setdefault(key, value)
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    try:
        runs = []
        for k in args.ks:
            runs.append(run_one(owners_config(args.config, work / f"k{k}", k, args.processes, args.rounds)))
            print(json.dumps(runs[-1]), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import torch

    result = {
        "processes": args.processes,
        "rounds": args.rounds,
        "config": str(args.config),
        "runs": runs,
        "headline": summarise(runs),
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "many_owners.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "many_owners.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
