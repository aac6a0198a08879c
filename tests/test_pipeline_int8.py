"""int8 both ways through the real flows: owners download the step, and every reader holds one theta_t."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from fgrpo_app.cli import app
from fgrpo_core.config import parse_config
from fgrpo_core.deltas import encode, sha256_hex
from fgrpo_core.update_checks import expected_delta_nbytes
from fgrpo_io import exchange
from fgrpo_io.store import LocalStore
from tests.conftest import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def int8_run(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path, prefect_harness: None
) -> dict[str, Any]:
    """A 2-round tiny experiment with federation.delta_dtype int8 (embedded, local store)."""
    # Prepare
    out = tmp_path_factory.mktemp("int8")
    raw = tiny_config(model_cache, out, federation={"rounds": 2, "min_clients": 2, "delta_dtype": "int8"})
    path = out / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    # Execute
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return {"summary": json.loads(result.stdout), "cfg": parse_config(raw), "out": out}


def test_each_round_names_an_int8_step_that_rebuilds_its_theta(int8_run: dict[str, Any]) -> None:
    # Prepare: a reader holding only theta_0, as an owner that took part in round 1
    cfg = int8_run["cfg"]
    store, ident = LocalStore(Path(cfg.store.root)), exchange.identity(cfg)
    exchange.forget_cached_globals()
    exchange.read_global(store, ident, 0)
    for t in (1, 2):
        manifest = exchange.read_global_manifest(store, ident, t)
        if manifest.step is None:  # a refused round names theta_{t-1}, which the reader holds
            assert exchange.read_global_manifest(store, ident, t - 1).adapter_key == manifest.adapter_key
            continue
        before = exchange.downloaded_global_bytes
        # Execute
        theta = exchange.read_global(store, ident, t)
        # Assert: only the step came down, the size of an int8 upload of this layout (the r4 test
        # adapter's small tensors make headers a third of it; SmolLM2's ratio is in bench/comm.py),
        # and it is the float32 theta_t bit for bit
        assert manifest.step.encoding == "int8"
        assert exchange.downloaded_global_bytes - before == manifest.step.nbytes
        assert manifest.step.nbytes == expected_delta_nbytes(theta, "int8") < manifest.nbytes / 2
        assert sha256_hex(encode(theta, "float32")) == manifest.sha256


def test_int8_pipeline_equals_the_bare_loop(int8_run: dict[str, Any]) -> None:
    # Prepare
    from fgrpo_core.runner import run_in_process

    cfg, summary = int8_run["cfg"], int8_run["summary"]
    store, ident = LocalStore(Path(cfg.store.root)), exchange.identity(cfg)
    exchange.forget_cached_globals()
    final = exchange.read_global(store, ident, summary["rounds"][-1]["round"])
    # Execute
    result = run_in_process(cfg, int8_run["out"] / "bare")
    # Assert: the runner defines theta_t as the pipeline does
    assert all(torch.equal(result.final_adapter[k], final[k]) for k in final)
