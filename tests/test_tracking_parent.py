"""A parent run's fixed facts (its experiment id and fgrpo experiment) are read once per process.

Each round's record opens its round run under the parent; reading the whole parent run (every
param and metric) for its experiment id cost ~14 ms a round on SQLite. The facts are kept from the
parent's start (or resume), and read once by a process that did not start it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fgrpo_io import tracking
from fgrpo_io.tracking import EXPERIMENT_TAG, PARENT_TAG, ROUND_TAG, Tracker


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=tmp_path / "artifacts")


def _count_get_run(monkeypatch: pytest.MonkeyPatch, tracker: Tracker) -> list[str]:
    """The run ids ``tracker`` reads with get_run from now on."""
    calls: list[str] = []
    get_run = tracker.client.get_run

    def counted(run_id: str) -> object:
        calls.append(run_id)
        return get_run(run_id)

    monkeypatch.setattr(tracker.client, "get_run", counted)
    return calls


def test_round_runs_read_nothing_of_a_parent_started_in_this_process(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    parent = tracker.start_experiment_run("fgrpo-parent", "kept", {"a": "1"}, {})
    calls = _count_get_run(monkeypatch, tracker)
    # Execute: three rounds' runs, then round 2's again from another tracker (each record has its own)
    runs = [tracker.open_round_run(parent, t) for t in (1, 2, 3)]
    again = Tracker(tracker.uri).open_round_run(parent, 2)
    # Assert: no read of the parent; each run started once, under the parent, in its experiment
    assert calls == []
    assert [r.started for r in runs] == [True, True, True] and again == (runs[1].run_id, False, False)
    monkeypatch.undo()
    parent_run = tracker.client.get_run(parent)
    for t, run in enumerate(runs, start=1):
        made = tracker.client.get_run(run.run_id)
        assert made.info.experiment_id == parent_run.info.experiment_id
        assert made.data.tags[PARENT_TAG] == parent and made.data.tags[ROUND_TAG] == str(t)
        assert made.data.tags[EXPERIMENT_TAG] == "kept"


def test_a_process_that_did_not_start_the_parent_reads_it_once(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the parent and round 1's run exist; this process has never seen them
    parent = tracker.start_experiment_run("fgrpo-parent", "read-once", {}, {})
    first = tracker.open_round_run(parent, 1)
    monkeypatch.setattr(tracking, "_PARENTS", {})
    calls = _count_get_run(monkeypatch, tracker)
    # Execute
    found = tracker.open_round_run(parent, 1)
    second = tracker.open_round_run(parent, 2)
    any_parent = tracker.round_run(parent, 1, any_parent=True)
    # Assert: one read for the three calls; round 1's run found (not started), round 2's started
    assert calls == [parent]
    assert found == (first.run_id, False, False) and any_parent == (first.run_id, False, False)
    assert second.started and second.run_id != first.run_id


def test_a_resumed_parent_keeps_its_experiment_and_finds_its_round_runs(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a parent with round 1's run, interrupted (FAILED); a new process resumes it
    parent = tracker.start_experiment_run("fgrpo-parent", "resumed", {"a": "1"}, {})
    first = tracker.open_round_run(parent, 1)
    tracker.finish_run(parent, "FAILED")
    monkeypatch.setattr(tracking, "_PARENTS", {})
    resume = tracker.unfinished_parent_run("fgrpo-parent", "resumed")
    assert resume is not None
    # Execute
    resumed = tracker.start_experiment_run("fgrpo-parent", "resumed", {"a": "1"}, {}, resume=resume)
    calls = _count_get_run(monkeypatch, tracker)
    found = tracker.open_round_run(resumed, 1)
    second = tracker.open_round_run(resumed, 2)
    # Assert: the same parent, no read of it, round 1's run found, round 2's in the parent's experiment
    assert resumed == parent and calls == []
    assert found == (first.run_id, False, False) and second.started
    monkeypatch.undo()
    made = tracker.client.get_run(second.run_id)
    assert made.info.experiment_id == resume.info.experiment_id and made.data.tags[PARENT_TAG] == parent
