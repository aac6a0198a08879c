"""bench/torch_threads.py without running experiments: the order of the counts, the ratios, the table."""

from __future__ import annotations

import statistics

import pytest

from bench import torch_threads


def test_every_count_leads_once_in_as_many_repeats() -> None:
    # Execute
    orders = [torch_threads.rotated([1, 2, 4], repeat) for repeat in range(3)]
    # Assert: each repeat runs every count once, and each count is first in one repeat.
    assert orders == [[1, 2, 4], [2, 4, 1], [4, 1, 2]]
    assert [order[0] for order in orders] == [1, 2, 4]


def test_summary_is_each_median_over_the_first_counts() -> None:
    # Prepare
    walls = {1: [16.7, 16.9, 16.8], 2: [28.2, 28.0, 28.5]}
    # Execute
    stats = torch_threads.summary(walls)
    # Assert: against statistics.median, the first count as the reference.
    assert stats["median_s"] == {"1": 16.8, "2": 28.2}
    assert stats["over_first"]["1"] == 1.0
    assert stats["over_first"]["2"] == pytest.approx(
        statistics.median(walls[2]) / statistics.median(walls[1]), abs=1e-3
    )


def test_markdown_has_a_row_per_count() -> None:
    # Prepare
    result = {
        "config": "configs/tiny.yaml",
        "repeats": 2,
        "machine": {
            "cpus": 2,
            "torch_default_threads": 2,
            "omp_wait_policy": "PASSIVE",
            "loadavg_end": [1.0],
        },
        "measured_at": "2026-01-01 00:00:00",
        "walls_s": {"1": [16.7, 16.8], "2": [28.2, 28.1]},
        **torch_threads.summary({1: [16.7, 16.8], 2: [28.2, 28.1]}),
        "same_weights": True,
    }
    # Execute
    text = torch_threads.markdown(result)
    # Assert
    assert "| 1 | 16.70, 16.80 | 16.75 | 1.000 |" in text
    assert "| 2 | 28.20, 28.10 | 28.15 | 1.681 |" in text
    assert "Same weights at every count: yes." in text
