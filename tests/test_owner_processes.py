"""Owners in worker processes (`federation.owner_processes`): the same rounds as in-process, bit for bit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fgrpo_core.config import parse_config
from fgrpo_core.deltas import encode
from fgrpo_core.runner import run_in_process
from fgrpo_io import exchange, prefect_settings, timing
from fgrpo_io.owner_pool import owner_cluster, torch_threads
from fgrpo_io.store import LocalStore
from tests.conftest import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_owners_in_two_worker_processes_give_the_bare_loops_rounds(
    tmp_path: Path, model_cache: Path, prefect_harness: None
) -> None:
    # Prepare: tracking off (not what is compared); two worker processes for three owners
    from flows.experiment import run_experiment

    raw = tiny_config(model_cache, tmp_path, name="in-processes", tracking={"enabled": False})
    cfg = parse_config({**raw, "federation": {**raw["federation"], "owner_processes": 2}})
    # Execute
    with prefect_settings.flow_settings(), timing.collect() as collected:
        summary = run_experiment(cfg)
    bare = run_in_process(cfg, tmp_path / "bare")
    # Assert: bit-identical final adapter and the same weights every round
    manifest = exchange.read_global_manifest(LocalStore(tmp_path / "store"), exchange.identity(cfg), 2)
    assert hashlib.sha256(encode(bare.final_adapter)).hexdigest() == manifest.sha256
    for record, result in zip(bare.rounds, summary.rounds, strict=True):
        assert {r.client_id: r.weight for r in record.rows} == {r.client_id: r.weight for r in result.rows}
    # Assert: the owners' training ran elsewhere, its wait counted as training
    assert collected.totals["train_s"] > 0


def test_no_cluster_without_owner_processes_and_threads_shared_out(tmp_path: Path) -> None:
    # Prepare
    cfg = parse_config(tiny_config(tmp_path, tmp_path))
    # Execute / Assert
    with owner_cluster(cfg) as address:
        assert address is None
    assert torch_threads(2) == max(1, (os.cpu_count() or 1) // 2)
    assert torch_threads(64) == 1
