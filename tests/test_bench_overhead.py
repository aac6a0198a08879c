"""bench/overhead.py without running experiments: the config it runs, its medians, its table."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench import overhead


def _result() -> dict[str, Any]:
    pipe = {"train_s": 5.0, "aggregate_s": 0.1, "evaluate_s": 0.5, "store_io_s": 0.1}
    pipe |= {"mlflow_s": 0.6, "model_load_s": 0.1, "orchestration_s": 1.2}
    bare = {"train_s": 5.2, "aggregate_s": 0.01, "evaluate_s": 0.4, "store_io_s": 0.0}
    bare |= {"mlflow_s": 0.0, "model_load_s": 0.0, "other_s": 0.1}
    return {
        "config": "configs/tiny.yaml",
        "repeats": 3,
        "machine": {"cpus": 2, "omp_wait_policy": "PASSIVE", "torch_threads": 1},
        "measured_at": "2026-01-01 00:00:00",
        "one_time": {"imports_s": 7.5, "prefect_api_start_s": 12.0},
        "model_cache_existed": True,
        "pipeline": {"wall_s": [7.6, 7.7, 8.0], "median_s": 7.7, "timings_median": pipe},
        "bare": {"wall_s": [5.7, 5.8, 6.1], "median_s": 5.8, "timings_median": bare},
        "ratio": 1.328,
        "added_s": 1.9,
        "ratio_from_split": 1.328,
        "paired_ratios": [1.33, 1.33, 1.31],
        "paired_ratio_median": 1.33,
        "goal": 1.10,
        "meets_goal": False,
        "same_weights": True,
    }


def test_bench_config_moves_every_output_under_the_scratch_folder(tmp_path: Path) -> None:
    # Execute
    cfg = overhead.bench_config(Path("configs/tiny.yaml"), tmp_path, "overhead-7")
    # Assert: its own name, store and MLflow database; the shared model cache is kept.
    assert cfg.name == "overhead-7"
    assert cfg.output_dir == str(tmp_path / "out")
    assert (cfg.store.kind, cfg.store.root) == ("local", str(tmp_path / "out" / "store"))
    assert cfg.tracking.tracking_uri == f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    assert cfg.model.cache_dir == ".cache/fgrpo/models"


def test_medians_are_per_part() -> None:
    # Prepare
    runs = [
        {"train_s": 3.0, "mlflow_s": 0.5},
        {"train_s": 1.0, "mlflow_s": 0.7},
        {"train_s": 2.0, "mlflow_s": 0.1},
    ]
    # Execute
    medians = overhead._medians(runs)
    # Assert: against statistics.median part by part.
    assert medians == {name: statistics.median(r[name] for r in runs) for name in runs[0]}


def test_markdown_table_has_both_paths_and_the_verdict() -> None:
    # Execute
    page = overhead.markdown(_result())
    # Assert
    assert "**Ratio pipeline / bare = 1.328** (misses the goal ≤ 1.10)" in page
    assert "| train | 5.00 | 5.20 |" in page
    assert "| orchestration | 1.20 | – |" in page
    assert "| other | – | 0.10 |" in page
    assert "| **wall (median)** | **7.70** | **5.80** |" in page
    assert "| prefect api start | 12 |" in page
    assert "adds a median 1.90 s per experiment" in page
    assert "OMP_WAIT_POLICY=PASSIVE, torch threads 1, measured" in page


def test_headline_holds_the_ratio_under_its_fixed_name() -> None:
    # Execute
    figures = overhead.headline(7.7 / 5.8)
    # Assert
    assert figures == {"pipeline_over_bare": round(7.7 / 5.8, 3)}


def test_torch_threads_reach_both_paths_through_the_config(tmp_path: Path) -> None:
    # Execute: the model load of either path sets grpo.torch_threads (0 keeps the config's).
    kept = overhead.bench_config(Path("configs/tiny.yaml"), tmp_path, "bench-threads")
    one = overhead.bench_config(Path("configs/tiny.yaml"), tmp_path, "bench-threads", torch_threads=1)
    # Assert
    assert (kept.grpo.torch_threads, one.grpo.torch_threads) == (0, 1)
