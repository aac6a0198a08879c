"""grpo.torch_threads: torch's intra-op CPU threads, set by the process that loads the model.

Every path that trains loads its bundle through ``load_bundle`` (the bare loop, the pipeline's
model pool, every owner process), so that one call is where the count is applied.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fgrpo_core.config import ExperimentConfig, parse_config
from fgrpo_core.errors import ConfigError
from fgrpo_core.models import load_bundle
from fgrpo_io import runtime
from tests.byo_helpers import byo_config, save_arch_model


@pytest.fixture(autouse=True)
def _torch_threads_restored() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _raw(threads: object) -> dict[str, object]:
    raw = byo_config({"source": "local", "path": "unused"})
    raw["grpo"] = {**raw["grpo"], "device": "cpu", "torch_threads": threads}
    return raw


def _cfg(tmp_path: Path, threads: int) -> ExperimentConfig:
    raw = _raw(threads)
    raw["model"] = {"source": "local", "path": str(save_arch_model("llama", tmp_path / "m"))}
    return parse_config(raw)


def test_loading_the_model_sets_the_configured_threads_here_and_in_later_threads(tmp_path: Path) -> None:
    # Prepare
    torch.set_num_threads(2)
    cfg = _cfg(tmp_path, 1)
    seen: list[int] = []
    # Execute
    load_bundle(cfg)
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    # Assert: the loading thread and a thread started afterwards (Prefect's task threads) compute at 1.
    assert torch.get_num_threads() == 1
    assert seen == [1]


def test_zero_keeps_torchs_own_count(tmp_path: Path) -> None:
    # Prepare
    torch.set_num_threads(2)
    cfg = _cfg(tmp_path, 0)
    # Execute
    load_bundle(cfg)
    # Assert
    assert torch.get_num_threads() == 2


def test_the_pipelines_model_pool_applies_it_too(tmp_path: Path) -> None:
    # Prepare: the pool of bundles that tasks borrow (fgrpo run, warm owners) loads on first use.
    torch.set_num_threads(2)
    cfg = _cfg(tmp_path, 1)
    runtime.clear_bundles()
    # Execute
    try:
        runtime.preload(cfg)
        threads = torch.get_num_threads()
    finally:
        runtime.clear_bundles()
    # Assert
    assert threads == 1


@pytest.mark.parametrize("bad", [-1, 2000, 1.5, "two"])
def test_a_bad_thread_count_is_refused_naming_the_field(bad: object) -> None:
    # Execute
    with pytest.raises(ConfigError) as info:
        parse_config(_raw(bad))
    # Assert
    assert "grpo.torch_threads" in str(info.value)
