"""bench/distributed.py's headline without starting a stack: its names and where its figures come from."""

from __future__ import annotations

from bench import distributed


def test_headline_counts_loads_from_the_summary() -> None:
    # Prepare: what `fgrpo run --json` reports when it counts each owner's base-model loads
    summary = {"model_loads": {"owner-a": 1, "owner-b": 2, "owner-c": 1}}
    # Execute
    figures = distributed.headline(3.3 / 3.0, summary, owners=3)
    # Assert
    assert figures == {"distributed_over_embedded": 1.1, "model_loads_per_owner_per_experiment": 2}


def test_headline_reports_no_count_rather_than_a_guess() -> None:
    # Execute: a summary without counts, and one that misses an owner
    silent = distributed.headline(2.0, {}, owners=3)
    partial = distributed.headline(2.0, {"model_loads": {"owner-a": 1}}, owners=3)
    # Assert
    assert set(silent) == {"distributed_over_embedded", "model_loads_per_owner_per_experiment"}
    assert silent["model_loads_per_owner_per_experiment"] is None
    assert partial["model_loads_per_owner_per_experiment"] is None
