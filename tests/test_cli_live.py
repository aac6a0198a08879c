"""`fgrpo run`'s live view and the library-noise filters, driven through fgrpo_io/runtime.py's hooks."""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import pytest
from rich.console import Console

from fgrpo_app.cli_live import LiveView
from fgrpo_app.quiet import quiet_libraries, quiet_prefect_task_runs
from fgrpo_core.config import load_config
from fgrpo_io import runtime


def _report(t: int) -> dict[str, Any]:
    rows = [
        {"client_id": "owner-a", "weight": 0.5, "accepted": True, "reason": ""},
        {"client_id": "owner-b", "weight": 0.5, "accepted": True, "reason": ""},
        {"client_id": "owner-c", "weight": 0.0, "accepted": False, "reason": "norm: 9.1 > 5 x median"},
    ]
    evaluation = {"macro_accuracy": 0.4, "families": {"add1": {"accuracy": 0.5}, "mul1": {"accuracy": 0.3}}}
    return {
        "round": t,
        "rows": rows,
        "evaluation": evaluation,
        "registry": {"version": "2", "alias": "challenger"},
    }


def _view(terminal: bool) -> tuple[LiveView, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=120, highlight=False)
    view = LiveView(load_config("configs/tiny.yaml"), console, plain_interval_s=3600)
    runtime.set_progress_hook(view.progress)
    runtime.set_event_hook(view.event)
    return view, out


@pytest.fixture(autouse=True)
def _no_hooks_left() -> Any:
    yield
    runtime.set_progress_hook(None)
    runtime.set_event_hook(None)


def test_plain_lines_when_not_on_a_terminal() -> None:
    # Prepare
    view, out = _view(terminal=False)
    # Execute: what tasks/train.py and the round flow report.
    with view:
        runtime.report_progress(1, "owner-a", 1, 10, 0.25)
        runtime.report_progress(1, "owner-a", 2, 10, 0.5)  # throttled
        runtime.report_progress(1, "owner-a", 10, 10, 0.75)
        runtime.report_event(runtime.CLIENT_STATE, round=1, client_id="owner-b", state="evaluating")
        runtime.report_event(runtime.ROUND_COMMITTED, report=_report(1))
    # Assert: one line per event, the round line as it commits, no escape codes.
    lines = out.getvalue().splitlines()
    assert lines == [
        "round 1/4 | owner-a      | training step 1/10, reward 0.250",
        "round 1/4 | owner-a      | trained 10/10 steps; evaluating, uploading",
        "round 1/4 | owner-b      | evaluating",
        "round 1: macro acc 0.400 (add1 0.50, mul1 0.30) | weights owner-a 0.50, owner-b 0.50, "
        "owner-c 0.00 (rejected) | v2 -> challenger",
    ]
    assert view.committed == {1}


def test_live_table_on_a_terminal_shows_round_and_every_owner() -> None:
    # Prepare
    view, out = _view(terminal=True)
    # Execute
    with view:
        runtime.report_progress(2, "owner-b", 3, 10, 0.5)
        title = view.title()
        runtime.report_event(runtime.ROUND_COMMITTED, report=_report(2))
    # Assert: the title says the round; each owner has a row with its state.
    assert title == "tiny: round 2 of 4"
    assert view.states["owner-c"] == "rejected, weight 0.00 (norm: 9.1 > 5 x median)"
    assert view.states["owner-a"] == "uploaded, weight 0.50"
    assert "round 2: macro acc 0.400" in out.getvalue()


def test_a_failing_display_does_not_fail_the_round(caplog: pytest.LogCaptureFixture) -> None:
    # Prepare
    def broken(kind: str, fields: dict[str, Any]) -> None:
        raise RuntimeError("display broke")

    runtime.set_event_hook(broken)
    # Execute
    with caplog.at_level(logging.ERROR):
        runtime.report_event(runtime.ROUND_COMMITTED, report={})
    # Assert
    assert "live view hook failed on round_committed" in caplog.text


def test_only_the_named_library_noise_is_filtered(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "PREFECT_LOGGING_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Execute
        quiet_libraries(live=True)
        warnings.warn(
            "`is_gradient_checkpointing` is deprecated and will be removed in v6.",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn(
            "`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=1
        )
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    # Assert
    assert [str(w.message) for w in caught] == ["something else is deprecated"]
    import os

    assert os.environ["TQDM_DISABLE"] == "1" and os.environ["PREFECT_LOGGING_LEVEL"] == "WARNING"


def test_prefect_task_completed_lines_are_dropped_and_failures_kept() -> None:
    # Prepare
    quiet_prefect_task_runs()
    logger = logging.getLogger("prefect.task_runs")

    def record(level: int, msg: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, level, __file__, 1, msg, None, None)

    # Execute
    kept = [
        logger.filter(record(logging.INFO, "Finished in state Completed()")),
        logger.filter(record(logging.ERROR, "Finished in state Failed('boom')")),
        logger.filter(record(logging.INFO, "Task run failed with exception")),
    ]
    # Assert
    assert kept == [False, True, True]
