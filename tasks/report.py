"""Persist a round's report (rows, evaluation, registry outcome) next to its state in the store."""

from __future__ import annotations

import contextlib
from typing import Any

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_io import layout
from fgrpo_io.store import ObjectExistsError, get_json, make_store, put_json
from tasks.retry import is_transient


@task(name="write-round-report", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
def write_report_task(cfg: ExperimentConfig, round_idx: int, report: dict[str, Any]) -> str:
    """Write once; a resumed round keeps the report it already committed."""
    store = make_store(cfg.store)
    key = layout.report_key(cfg.store.prefix, cfg.name, round_idx)
    with contextlib.suppress(ObjectExistsError):
        put_json(store, key, report)
    return key


@task(name="read-round-reports", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
def read_reports_task(cfg: ExperimentConfig, rounds: list[int]) -> list[dict[str, Any]]:
    store = make_store(cfg.store)
    return [
        get_json(store, layout.report_key(cfg.store.prefix, cfg.name, t))
        for t in rounds
        if store.exists(layout.report_key(cfg.store.prefix, cfg.name, t))
    ]


@task(name="first-unreported-round", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
def first_unreported_round_task(cfg: ExperimentConfig, last_committed: int) -> int:
    """The first round to run: ``last_committed + 1``, or an earlier committed round without a report.

    A coordinator stopped after a round's commit but before its evaluation, logging, registration
    or report finishes that round first (flows/round.py trains and aggregates nothing for it).
    """
    store = make_store(cfg.store)
    keys = set(store.list_keys(layout.global_prefix(cfg.store.prefix, cfg.name)))
    for t in range(1, last_committed + 1):
        if layout.report_key(cfg.store.prefix, cfg.name, t) not in keys:
            return t
    return last_committed + 1
