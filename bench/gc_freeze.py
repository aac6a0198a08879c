"""What `gc.freeze()` after imports and model load saves a long-lived training process (issue 15).

accelerate calls `gc.collect()` at every `Trainer.train`; a process that imported torch,
transformers, TRL, Prefect and MLflow holds most of a million objects, and a full collection walks
them all. fgrpo_io/runtime.py freezes them once the model is loaded (a warm owner, a Dask owner
process, the embedded coordinator). This bench runs the same bare experiment
(`fgrpo_core.runner.run_in_process`, tiny config) in fresh processes, with and without the freeze,
interleaved (frozen, unfrozen; unfrozen, frozen; ...), and reports per pair the ratio of the
experiment's wall time, the objects the collector tracks, and one `gc.collect()`'s time.

    .venv/bin/python -m bench.gc_freeze [--config configs/tiny.yaml] [--pairs 3]

Writes bench/results/gc_freeze.json (top-level `headline`) and gc_freeze.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def child(config: Path, freeze: bool, work: Path) -> dict[str, Any]:
    """One process: the imports of a coordinator or owner, the model, (the freeze), the experiment."""
    from fgrpo_io.environment import apply_defaults

    apply_defaults()
    import flows.experiment  # noqa: F401  (Prefect, MLflow, boto3: what a real process holds)
    from fgrpo_core.config import load_config, parse_config
    from fgrpo_core.models import load_bundle
    from fgrpo_core.runner import run_in_process

    raw = load_config(config).model_dump()
    raw["output_dir"] = str(work / "out")
    cfg = parse_config(raw)
    load_bundle(cfg)
    gc.collect()
    if freeze:
        gc.freeze()
    tracked = len(gc.get_objects())
    t0 = time.perf_counter()
    gc.collect()
    collect_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_in_process(cfg, work / "run")
    wall_s = time.perf_counter() - t0
    weights = [[round(r.weight, 12) for r in rec.rows] for rec in result.rounds]
    return {
        "freeze": freeze,
        "tracked": tracked,
        "collect_s": collect_s,
        "wall_s": wall_s,
        "weights": weights,
    }


def _spawn(config: Path, freeze: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fgrpo-gc-") as tmp:
        cmd = [sys.executable, "-m", "bench.gc_freeze", "--child", "--config", str(config), "--work", tmp]
        proc = subprocess.run(
            [*cmd, *(["--freeze"] if freeze else [])],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"child (freeze={freeze}) failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure(config: Path, pairs: int) -> dict[str, Any]:
    loadavg_start = list(os.getloadavg())
    runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i in range(pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        got = {flag: _spawn(config, flag) for flag in order}
        runs.append((got[True], got[False]))
    ratios = [f["wall_s"] / u["wall_s"] for f, u in runs]
    median = statistics.median
    return {
        "headline": {"frozen_over_unfrozen_wall": median(ratios)},
        "config": str(config),
        "pairs": pairs,
        "ratios": ratios,
        "frozen_wall_s": [f["wall_s"] for f, _ in runs],
        "unfrozen_wall_s": [u["wall_s"] for _, u in runs],
        "collect_s": {
            "frozen": median(f["collect_s"] for f, _ in runs),
            "unfrozen": median(u["collect_s"] for _, u in runs),
        },
        "tracked_objects": {"frozen": runs[0][0]["tracked"], "unfrozen": runs[0][1]["tracked"]},
        "same_weights": all(f["weights"] == u["weights"] for f, u in runs),
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg_start,
        "loadavg_end": list(os.getloadavg()),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        f"| {i + 1} | {f:.2f} | {u:.2f} | {f / u:.3f} |"
        for i, (f, u) in enumerate(zip(result["frozen_wall_s"], result["unfrozen_wall_s"], strict=True))
    ]
    return "\n".join(
        [
            "# gc.freeze() after imports and model load",
            "",
            f"`bench/gc_freeze.py --config {Path(result['config']).name} --pairs {result['pairs']}`, "
            f"{result['measured_at']}: {result['cpus']} CPUs, load average {result['loadavg_start'][0]:.2f} "
            f"at start, {result['loadavg_end'][0]:.2f} at the end. The bare experiment in a fresh process "
            "that imported what a coordinator or owner imports and loaded the model; pairs interleaved.",
            "",
            "| pair | frozen (s) | unfrozen (s) | frozen / unfrozen |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            f"Median ratio **{result['headline']['frozen_over_unfrozen_wall']:.3f}**. Objects the collector "
            f"walks: {result['tracked_objects']['unfrozen']:,} unfrozen, {result['tracked_objects']['frozen']:,} "
            f"frozen; one `gc.collect()`: {result['collect_s']['unfrozen']:.3f} s against "
            f"{result['collect_s']['frozen']:.3f} s. Same weights every round: "
            f"{'yes' if result['same_weights'] else 'no'}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--freeze", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.config), args.freeze, Path(args.work))))
        return 0
    result = measure(Path(args.config), args.pairs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gc_freeze.json").write_text(json.dumps(result, indent=1))
    (out / "gc_freeze.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
