"""How many intra-op threads torch should use: the bare loop, side by side, at each thread count.

torch starts one intra-op thread per core. With ``OMP_WAIT_POLICY=PASSIVE`` (fgrpo_io/environment.py)
an idle OpenMP worker sleeps, and every parallel region wakes it again: on a small model, whose
thousands of operators per step are each too short to share, that costs more than the second
core gives. This bench runs the same bare experiment (``fgrpo_core.runner.run_in_process``: no
Prefect, no store, no MLflow) in one process at each ``--threads`` count in turn, rotating the
order every repeat, and reports each count's median wall over the first count's.

    .venv/bin/python -m bench.torch_threads [--config configs/tiny.yaml] [--threads 1 2] [--repeats 2]

Writes bench/results/torch-threads.json (top-level ``headline``) and torch-threads.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fgrpo_io.environment import apply_defaults

RESULTS = Path(__file__).parent / "results"


def rotated(counts: Sequence[int], repeat: int) -> list[int]:
    """The thread counts of one repeat, started one further each time (1 2, 2 1, ...)."""
    shift = repeat % len(counts)
    return [*counts[shift:], *counts[:shift]]


def summary(walls: dict[int, list[float]]) -> dict[str, Any]:
    """Median wall per count, and each median over the first count's."""
    medians = {n: statistics.median(w) for n, w in walls.items()}
    first = next(iter(medians))
    return {
        "median_s": {str(n): round(m, 3) for n, m in medians.items()},
        "over_first": {str(n): round(m / medians[first], 3) for n, m in medians.items()},
    }


def measure(config: Path, counts: Sequence[int], repeats: int, work: Path) -> dict[str, Any]:
    """A warm-up run, then ``repeats`` rounds of one bare experiment per thread count."""
    import torch

    from fgrpo_core.config import load_config, parse_config
    from fgrpo_core.runner import run_in_process

    raw = {**load_config(config).model_dump(), "output_dir": str(work / "out")}
    default_threads = torch.get_num_threads()
    run_in_process(parse_config(raw), work / "warm-up")  # the model cache, lazy imports
    walls: dict[int, list[float]] = {n: [] for n in counts}
    weights: dict[int, list[Any]] = {}
    for repeat in range(repeats):
        for n in rotated(counts, repeat):
            # Set as a real run sets it: by the model load, from grpo.torch_threads.
            cfg = parse_config({**raw, "grpo": {**raw["grpo"], "torch_threads": n}})
            t0 = time.perf_counter()
            result = run_in_process(cfg, work / f"run-{repeat}-{n}")
            walls[n].append(round(time.perf_counter() - t0, 3))
            weights.setdefault(n, [{r.client_id: r.weight for r in rec.rows} for rec in result.rounds])
            print(f"repeat {repeat + 1}/{repeats}: {n} thread(s) {walls[n][-1]:.2f} s", file=sys.stderr)
    torch.set_num_threads(default_threads)
    stats = summary(walls)
    last = str(counts[-1])
    return {
        "headline": {f"bare_{last}_threads_over_{counts[0]}": stats["over_first"][last]},
        "config": str(config),
        "repeats": repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_default_threads": default_threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "walls_s": {str(n): w for n, w in walls.items()},
        **stats,
        # Float sums in another order: the weights need not match bit for bit across counts.
        "same_weights": all(w == weights[counts[0]] for w in weights.values()),
    }


def markdown(result: dict[str, Any]) -> str:
    rows = ["| torch threads | walls (s) | median (s) | over the first |", "|---:|---|---:|---:|"]
    for n, walls in result["walls_s"].items():
        rows.append(
            f"| {n} | {', '.join(f'{w:.2f}' for w in walls)} | {result['median_s'][n]:.2f} | "
            f"{result['over_first'][n]:.3f} |"
        )
    m = result["machine"]
    return "\n".join(
        [
            f"# Intra-op threads: {result['config']}",
            "",
            f"The bare loop, one process, {result['repeats']} repeats per count in rotating order; "
            f"{m['cpus']} CPUs (torch's default {m['torch_default_threads']} threads), "
            f"OMP_WAIT_POLICY={m['omp_wait_policy']}, measured {result['measured_at']}, load average "
            f"at the end {m['loadavg_end'][0]}. Same weights at every count: "
            f"{'yes' if result['same_weights'] else 'no (float sums in another order)'}.",
            "",
            *rows,
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("configs/tiny.yaml"))
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="counts, the first is the reference"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.threads) < 1 or len(set(args.threads)) != len(args.threads):
        parser.error("--repeats and every --threads count must be at least 1, the counts distinct")
    apply_defaults()
    with tempfile.TemporaryDirectory(prefix="fgrpo-threads-") as work:
        result = measure(args.config, args.threads, args.repeats, Path(work))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "torch-threads.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "torch-threads.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
