"""Suite-wide settings: offline Hugging Face, no telemetry, an isolated Prefect home."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fgrpo_io.environment import apply_defaults

# Set before any test module imports transformers, prefect or mlflow (as the CLI does).
apply_defaults()

from tests.s3_server import s3_endpoint, s3_env  # noqa: E402, F401


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of warmed-up tiny models for the whole session (warm-up costs seconds)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A throwaway Prefect API (SQLite) for the session; nothing touches ~/.prefect."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def tiny_config(model_cache: Path, output_dir: Path, **sections: Any) -> dict[str, Any]:
    """A small, fast experiment on the tiny model: 3 owners with different reward scales."""
    cfg: dict[str, Any] = {
        "name": "tiny-test",
        "seed": 0,
        "output_dir": str(output_dir),
        "model": {"source": "tiny", "cache_dir": str(model_cache), "tiny_warmup_steps": 200},
        "lora": {"r": 4, "alpha": 8},
        "grpo": {
            "local_steps": 2,
            "learning_rate": 1e-3,
            "num_generations": 4,
            "per_device_train_batch_size": 8,
            "max_completion_length": 4,
        },
        "data": {"families": ["add1", "mul1", "add2"], "eval_per_family": 12, "probe_per_family": 8},
        "clients": [
            {"id": "owner-a", "families": ["add1"], "n_train": 16, "n_val": 8},
            {"id": "owner-b", "families": ["mul1"], "n_train": 16, "n_val": 8},
            {"id": "owner-c", "families": ["add2"], "n_train": 16, "n_val": 8},
        ],
        "evaluation": {"max_new_tokens": 4},
        "federation": {"rounds": 2, "min_clients": 2},
        "store": {"kind": "local", "root": str(output_dir / "store")},
        "tracking": {"tracking_uri": f"sqlite:///{output_dir / 'mlflow.db'}"},
    }
    for name, value in sections.items():
        cfg[name] = (
            {**cfg[name], **value} if isinstance(value, dict) and isinstance(cfg.get(name), dict) else value
        )
    return cfg
