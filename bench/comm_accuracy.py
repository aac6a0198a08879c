"""What the lossy encodings cost: reconstruction error of a delta, and the final accuracy of runs.

The federated runs are ``fgrpo_core.runner.run_in_process`` on one config, once per seed and
encoding, seeds outermost so that each seed's three runs follow each other. The in-process
runner encodes and decodes every delta with ``federation.delta_dtype`` exactly as an upload
would, and with ``max_parallel_clients`` 1 a run is bit-for-bit reproducible, so within a seed
the encodings differ only by what the encoding lost. Besides accuracy (1/(eval set) steps, see
``accuracy_step_points``) each run reports how far its final adapter lies from the float32
run's, relative to how far the float32 run moved from the initial adapter: a finer measure.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.comm_layouts import ENCODING_NAMES, with_changes
from fgrpo_core.config import ExperimentConfig
from fgrpo_core.deltas import decode, encode
from fgrpo_core.federation import client_update
from fgrpo_core.models import ModelBundle
from fgrpo_core.runner import run_in_process
from fgrpo_core.types import Adapter, GlobalEval


def _l2(adapter: Adapter) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in adapter.values()))


def _difference(a: Adapter, b: Adapter) -> Adapter:
    return {key: a[key].double() - b[key].double() for key in sorted(a)}


def reconstruction_error(delta: Adapter) -> dict[str, dict[str, float]]:
    """Per encoding: max |x_hat - x|, its ratio to max |x|, and ||x_hat - x|| / ||x|| (global L2)."""
    norm = _l2(delta)
    max_abs = max(float(t.abs().max()) for t in delta.values())
    out: dict[str, dict[str, float]] = {}
    for enc in ENCODING_NAMES:
        decoded, _ = decode(encode(delta, enc))
        error = _difference(decoded, delta)
        worst = max(float(t.abs().max()) for t in error.values())
        out[enc] = {
            "max_abs_error": worst,
            "max_abs_error_over_max_abs": worst / max_abs if max_abs else 0.0,
            "relative_l2_error": _l2(error) / norm if norm else 0.0,
        }
    return out


def real_deltas(
    bundle: ModelBundle, global_adapter: Adapter, cfg: ExperimentConfig, work_dir: Path
) -> dict[str, Adapter]:
    """Every client's round-1 delta from ``global_adapter`` (what it would upload)."""
    return {
        spec.id: client_update(bundle, global_adapter, cfg, spec.id, 1, work_dir).delta
        for spec in cfg.clients
    }


def _macro_reward(evaluation: GlobalEval) -> float:
    return statistics.fmean(f.mean_reward for f in evaluation.families.values())


def accuracy_step_points(cfg: ExperimentConfig) -> float:
    """One evaluation prompt's worth of macro accuracy, in points."""
    return 100.0 / (len(cfg.data.families) * cfg.data.eval_per_family)


def federated_runs(cfg: ExperimentConfig, seeds: list[int], initial: Adapter) -> list[dict[str, Any]]:
    """One row per (seed, encoding): accuracy, reward, bytes, wall time, distance to the float32 run."""
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        finals: dict[str, Adapter] = {}
        for enc in ENCODING_NAMES:
            run_cfg = with_changes(cfg, {"seed": seed, "federation": {"delta_dtype": enc}})
            started = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="fgrpo-bench-comm-") as work_dir:
                result = run_in_process(run_cfg, work_dir)
            finals[enc] = result.final_adapter
            final = result.rounds[-1].evaluation
            rows.append(
                {
                    "seed": seed,
                    "encoding": enc,
                    "initial_macro_accuracy": result.initial_evaluation.macro_accuracy,
                    "final_macro_accuracy": final.macro_accuracy,
                    "final_accuracy_per_family": {f: s.accuracy for f, s in sorted(final.families.items())},
                    "final_macro_mean_reward": _macro_reward(final),
                    "delta_bytes": sorted({r.delta_bytes for rec in result.rounds for r in rec.rows}),
                    "wall_s": time.perf_counter() - started,
                }
            )
            print(
                f"  seed {seed} {enc:>8}: macro accuracy {final.macro_accuracy:.4f} "
                f"({rows[-1]['wall_s']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        moved = _l2(_difference(finals["float32"], initial))
        for row in rows[-len(ENCODING_NAMES) :]:
            gap = _l2(_difference(finals[row["encoding"]], finals["float32"]))
            row["final_adapter_distance_to_float32_over_float32_movement"] = gap / moved if moved else 0.0
    return rows


def summarise(rows: list[dict[str, Any]], step_points: float, goal_points: float) -> dict[str, Any]:
    """Means per encoding and the per-seed differences to float32, in accuracy points."""
    by = {(r["seed"], r["encoding"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    summary: dict[str, Any] = {"accuracy_step_points": step_points, "encodings": {}}
    for enc in ENCODING_NAMES:
        diffs = [
            100.0 * (by[(s, enc)]["final_macro_accuracy"] - by[(s, "float32")]["final_macro_accuracy"])
            for s in seeds
        ]
        summary["encodings"][enc] = {
            "mean_final_macro_accuracy": statistics.fmean(
                by[(s, enc)]["final_macro_accuracy"] for s in seeds
            ),
            "mean_final_macro_mean_reward": statistics.fmean(
                by[(s, enc)]["final_macro_mean_reward"] for s in seeds
            ),
            "minus_float32_points_per_seed": diffs,
            "minus_float32_points_mean": statistics.fmean(diffs),
            "mean_change_from_initial_points": statistics.fmean(
                100.0 * (by[(s, enc)]["final_macro_accuracy"] - by[(s, enc)]["initial_macro_accuracy"])
                for s in seeds
            ),
        }
    int8 = summary["encodings"]["int8"]["minus_float32_points_mean"]
    summary["goal"] = {
        "int8_within_points_of_float32": goal_points,
        "met": abs(int8) <= goal_points,
    }
    return summary
