"""Overhead of the orchestrated pipeline over the bare in-process loop, on one config.

The pipeline is what ``fgrpo run`` runs: ``flows.experiment.run_experiment`` with its embedded
defaults (ephemeral Prefect API, local store, MLflow on SQLite). The baseline is
``fgrpo_core.runner.run_in_process``: the same clients, seeds and arithmetic, no orchestrator, no
store, no tracker. Both run in this one process, interleaved (bare, pipeline; pipeline, bare; ...)
so that a slow spell of a shared machine hits them alike; each reports the median of
``--repeats`` runs. Costs paid once per process or per machine, not per experiment, are measured
apart and kept out of the ratio: the imports, the first model load (or the tiny model's warm-up
into its cache), the start of Prefect's ephemeral API, and a first run of each path (lazy imports,
MLflow's database creation, Prefect's first registration of the flows). Every pipeline run is a
new experiment (its own name) and loads its model once, as a fresh ``fgrpo run`` would.

OpenMP's busy-waiting makes torch in the main thread many times slower on an oversubscribed
machine (the bare loop computes in the main thread; Prefect's tasks in worker threads), so
``OMP_WAIT_POLICY`` is set to PASSIVE unless the environment sets it.

    .venv/bin/python -m bench.overhead [--config configs/tiny.yaml] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fgrpo_io.environment import DEFAULTS

ENV = {**DEFAULTS, "PREFECT_LOGGING_LEVEL": "WARNING"}
GOAL = 1.05  # issue 15: pipeline / bare loop
RESULTS = Path(__file__).parent / "results"
PARTS = ["train_s", "aggregate_s", "evaluate_s", "store_io_s", "mlflow_s", "model_load_s"]
ADDED_PARTS = ["store_io_s", "mlflow_s", "orchestration_s"]  # the pipeline's alone


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def _medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    return {name: round(statistics.median(r[name] for r in runs), 3) for name in runs[0]}


def bench_config(path: Path, work: Path, name: str, torch_threads: int = 0) -> Any:
    """The config with its outputs, store and MLflow database under ``work`` (model cache kept).

    ``torch_threads``: grpo.torch_threads of both paths, set by their model loads (0: the config's).
    """
    from fgrpo_core.config import load_config, parse_config

    raw = load_config(path).model_dump()
    if torch_threads:
        raw["grpo"] = {**raw["grpo"], "torch_threads": torch_threads}
    raw["name"] = name
    raw["output_dir"] = str(work / "out")
    raw["store"] = {**raw["store"], "kind": "local", "root": str(work / "out" / "store")}
    raw["tracking"] = {**raw["tracking"], "tracking_uri": f"sqlite:///{work / 'out' / 'mlflow.db'}"}
    return parse_config(raw)


def run_pipeline(cfg: Any) -> dict[str, Any]:
    """One experiment through the Prefect flows; its wall time, split and weights per round."""
    from fgrpo_io import prefect_settings, runtime, timing
    from flows.experiment import run_experiment

    runtime.clear_bundles()  # a fresh `fgrpo run` loads its model once: so does each run here
    with prefect_settings.flow_settings(), timing.collect() as collected:  # as `fgrpo run` does
        wall_s, summary = _timed(lambda: run_experiment(cfg))
    weights = [{r.client_id: r.weight for r in rep.rows} for rep in summary.rounds]
    return {
        "wall_s": wall_s,
        "timings": timing.with_orchestration(collected.totals, wall_s),
        "weights": weights,
    }


def run_bare(cfg: Any, work: Path) -> dict[str, Any]:
    """The same experiment in the bare loop; ``other_s``: model load, delta encoding, data setup."""
    from fgrpo_core.runner import run_in_process

    wall_s, result = _timed(lambda: run_in_process(cfg, work))
    timings = {name: round(result.timings.get(name, 0.0), 3) for name in PARTS}
    timings["other_s"] = round(max(0.0, wall_s - sum(result.timings.values())), 3)
    weights = [{r.client_id: r.weight for r in rec.rows} for rec in result.rounds]
    return {"wall_s": wall_s, "timings": timings, "weights": weights}


def one_time_costs(config: Path, work: Path, torch_threads: int = 0) -> dict[str, float]:
    """Seconds of what a process or a machine pays once, then of a first run of each path."""
    costs: dict[str, float] = {}
    costs["imports_s"], _ = _timed(lambda: __import__("flows.experiment"))
    from prefect import flow

    from fgrpo_core.models import load_bundle

    cfg = bench_config(config, work, "overhead-warmup", torch_threads)
    # Without a cache, the first load converts the model (SmolLM2) or warms the tiny one up.
    costs["model_first_load_s"], _ = _timed(lambda: load_bundle(cfg))

    @flow(name="overhead-noop")
    def noop() -> None:
        return None

    from fgrpo_io import prefect_settings

    # The ephemeral API starts here, with the settings `fgrpo run` gives it.
    with prefect_settings.flow_settings():
        costs["prefect_api_start_s"], _ = _timed(noop)
    costs["pipeline_first_run_s"] = run_pipeline(cfg)["wall_s"]
    costs["bare_first_run_s"] = run_bare(cfg, work / "bare-warmup")["wall_s"]
    return {k: round(v, 3) for k, v in costs.items()}


def measure(config: Path, repeats: int, work: Path, torch_threads: int = 0) -> dict[str, Any]:
    """One-time costs, then ``repeats`` interleaved runs of each path, and their medians."""
    import torch

    model_cache = Path(bench_config(config, work, "overhead-warmup").model.cache_dir)
    model_cache_existed = model_cache.is_dir() and any(model_cache.iterdir())
    one_time = one_time_costs(config, work, torch_threads)
    pipeline: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    for i in range(repeats):
        cfg = bench_config(config, work, f"overhead-{i}", torch_threads)
        order = ["bare", "pipeline"] if i % 2 == 0 else ["pipeline", "bare"]
        for which in order:
            if which == "bare":
                bare.append(run_bare(cfg, work / f"bare-{i}"))
            else:
                pipeline.append(run_pipeline(cfg))
        print(
            f"repeat {i + 1}/{repeats}: pipeline {pipeline[-1]['wall_s']:.2f} s, bare {bare[-1]['wall_s']:.2f} s",
            file=sys.stderr,
        )
    p_med = statistics.median(r["wall_s"] for r in pipeline)
    b_med = statistics.median(r["wall_s"] for r in bare)
    # What the bare loop does not do at all: a steadier measure than the walls, whose training
    # time alone varies by seconds from run to run on a shared machine.
    added = statistics.median(sum(r["timings"][p] for p in ADDED_PARTS) for r in pipeline)
    paired = [p["wall_s"] / b["wall_s"] for p, b in zip(pipeline, bare, strict=True)]
    return {
        "headline": headline(p_med / b_med),
        "config": str(config),
        "repeats": repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "torch_threads": torch.get_num_threads(),
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "one_time": one_time,
        "model_cache_existed": model_cache_existed,
        "pipeline": {
            "wall_s": [round(r["wall_s"], 3) for r in pipeline],
            "median_s": round(p_med, 3),
            "timings_median": _medians([r["timings"] for r in pipeline]),
        },
        "bare": {
            "wall_s": [round(r["wall_s"], 3) for r in bare],
            "median_s": round(b_med, 3),
            "timings_median": _medians([r["timings"] for r in bare]),
        },
        "ratio": round(p_med / b_med, 3),
        "added_s": round(added, 3),
        "ratio_from_split": round((b_med + added) / b_med, 3),
        "paired_ratios": [round(r, 3) for r in paired],
        "paired_ratio_median": round(statistics.median(paired), 3),
        "goal": GOAL,
        "meets_goal": p_med / b_med <= GOAL,
        "same_weights": all(p["weights"] == b["weights"] for p, b in zip(pipeline, bare, strict=True)),
    }


def headline(ratio: float) -> dict[str, float]:
    """The figure the issue tracks, under its fixed name (median pipeline wall / median bare wall)."""
    return {"pipeline_over_bare": round(ratio, 3)}


def markdown(result: dict[str, Any]) -> str:
    """The split side by side (medians per part), the ratio, and the one-time costs."""
    pipe, bare = result["pipeline"]["timings_median"], result["bare"]["timings_median"]

    def cell(timings: dict[str, float], name: str) -> str:
        return f"{timings[name]:.2f}" if name in timings else "–"

    rows = ["| part | pipeline (s) | bare loop (s) |", "|---|---:|---:|"]
    for name in [*PARTS, "orchestration_s", "other_s"]:
        label = name.removesuffix("_s").replace("_", " ")
        rows.append(f"| {label} | {cell(pipe, name)} | {cell(bare, name)} |")
    rows.append(
        f"| **wall (median)** | **{result['pipeline']['median_s']:.2f}** | **{result['bare']['median_s']:.2f}** |"
    )
    once = ["| one-time cost | s |", "|---|---:|"] + [
        f"| {k.removesuffix('_s').replace('_', ' ')} | {v:g} |" for k, v in result["one_time"].items()
    ]
    verdict = "meets" if result["meets_goal"] else "misses"
    return "\n".join(
        [
            f"# Orchestration overhead: {result['config']}",
            "",
            f"Median of {result['repeats']} interleaved runs each, one process, {result['machine']['cpus']} "
            f"CPUs, OMP_WAIT_POLICY={result['machine']['omp_wait_policy']}, "
            f"torch threads {result['machine'].get('torch_threads', '?')}, measured {result['measured_at']}; "
            f"load average at the end {result['machine'].get('loadavg_end', ['?'])[0]}.",
            "",
            f"**Ratio pipeline / bare = {result['ratio']:.3f}** ({verdict} the goal ≤ {result['goal']:.2f}); "
            f"paired ratios {', '.join(f'{r:.2f}' for r in result['paired_ratios'])} "
            f"(median {result['paired_ratio_median']:.2f}); "
            f"pipeline walls {result['pipeline']['wall_s']} s, bare walls {result['bare']['wall_s']} s; "
            f"same weights every round: {'yes' if result['same_weights'] else 'NO'}.",
            "",
            f"From the split: the pipeline adds a median {result['added_s']:.2f} s per experiment "
            "(store I/O + MLflow + orchestration, which the bare loop does not do), i.e. a ratio of "
            f"{result['ratio_from_split']:.3f} on the bare loop's median wall. Training time varies "
            "by seconds between runs on a shared machine, so this is the steadier estimate.",
            "",
            "Parts are medians per part (they need not add up to the median wall). Pipeline parts are "
            "measured inside each task (fgrpo_io/timing.py); orchestration is the rest of the wall time. "
            "Bare loop: train, aggregate and evaluate as the runner times them; other = model load, "
            "delta encoding, data setup.",
            "",
            *rows,
            "",
            "Kept out of the ratio (paid once per process or machine; the model cache "
            f"{'existed' if result['model_cache_existed'] else 'was built'} before the run):",
            "",
            *once,
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("configs/tiny.yaml"), help="experiment config")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path (median)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of overhead.json and overhead.md")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (printed)")
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="grpo.torch_threads of both paths (0: the config's)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.torch_threads < 0:
        parser.error("--repeats must be at least 1, --torch-threads at least 0")
    work = Path(tempfile.mkdtemp(prefix="fgrpo-overhead-"))
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")  # a throwaway Prefect API database
    try:
        # Both paths alike (bench/torch_threads.py measures what the count changes).
        result = measure(args.config, args.repeats, work, args.torch_threads)
    finally:
        if args.keep:
            print(f"scratch folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "overhead.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
