"""Loose bounds (issue 11, attack 7): non-finite floats, absurd sizes and escaping prefixes are
refused by `validate-config`, naming the field, before any store, tracker or flow exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fgrpo_app.cli import app
from fgrpo_core.config import parse_config
from fgrpo_core.errors import ConfigError
from fgrpo_core.strict import MAX_COUNT, MAX_SEED
from fgrpo_io import layout
from fgrpo_io.store import StoreError
from tests.conftest import tiny_config


def _with(tmp_path: Path, section: str, change: dict[str, Any]) -> dict[str, Any]:
    raw = tiny_config(tmp_path / "cache", tmp_path / "out")
    if section == "clients":
        raw["clients"][0] = {**raw["clients"][0], **change}
    else:
        raw[section] = {**raw.get(section, {}), **change}
    return raw


@pytest.mark.parametrize(
    ("section", "change", "needle"),
    [
        ("grpo", {"learning_rate": float("inf")}, "grpo.learning_rate: Input should be a finite number"),
        (
            "aggregation",
            {"server_lr": float("inf")},
            "aggregation.server_lr: Input should be a finite number",
        ),
        (
            "aggregation",
            {"gain_clip": float("inf")},
            "aggregation.gain_clip: Input should be a finite number",
        ),
        (
            "clients",
            {"reward_scale": float("nan")},
            "clients.0.reward_scale: Input should be a finite number",
        ),
        (
            "federation",
            {"round_timeout_s": float("nan")},
            "federation.round_timeout_s: Input should be a finite",
        ),
        (
            "grpo",
            {"local_steps": 10**9},
            f"grpo: Value error, local_steps is 1000000000, beyond the sane maximum {MAX_COUNT}",
        ),
        (
            "clients",
            {"n_train": 10**9},
            "clients.0: Value error, n_train is 1000000000, beyond the sane maximum",
        ),
        ("data", {"eval_per_family": 10**9}, "data: Value error, eval_per_family is 1000000000"),
        ("federation", {"rounds": 10**9}, "federation: Value error, rounds is 1000000000"),
        ("data", {"seed": 2**64}, f"data: Value error, seed is {2**64}, beyond the sane maximum {MAX_SEED}"),
        ("store", {"prefix": "../../.."}, "store.prefix: Value error, store.prefix '../../..' has segments"),
        ("store", {"prefix": "fgrpo//x"}, "has segments ['']"),
        ("store", {"prefix": "/abs"}, "has segments ['']"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_validate_config_refuses_unbounded_values(
    tmp_path: Path, section: str, change: dict[str, Any], needle: str
) -> None:
    # Prepare: the tiny config with one value out of bounds, written as YAML (.inf / .nan).
    raw = _with(tmp_path, section, change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    # Execute
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    result = CliRunner().invoke(app, ["validate-config", str(path)])
    # Assert: both name the field; nothing was created.
    assert needle in str(err.value)
    assert result.exit_code == 2 and needle in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("prefix", ["", "fgrpo", "team-a/fgrpo.v2"])
def test_prefixes_the_config_accepts_are_prefixes_the_layout_accepts(tmp_path: Path, prefix: str) -> None:
    # Prepare / Execute
    cfg = parse_config(_with(tmp_path, "store", {"prefix": prefix}))
    key = layout.global_prefix(cfg.store.prefix, cfg.name)
    # Assert: one pattern for both (fgrpo_core.settings.PREFIX_SEGMENT_PATTERN).
    assert key == (f"{prefix}/" if prefix else "") + f"{cfg.name}/global/"


def test_the_layout_refuses_what_the_config_refuses() -> None:
    # Execute / Assert: a prefix that slipped past the config still never becomes a key.
    with pytest.raises(StoreError, match="segment of store prefix"):
        layout.global_prefix("../../..", "tiny-test")


def test_largest_sane_values_still_validate(tmp_path: Path) -> None:
    # Prepare: every bound at its maximum.
    raw = _with(tmp_path, "data", {"seed": MAX_SEED, "eval_per_family": MAX_COUNT})
    # Execute
    cfg = parse_config(raw)
    # Assert
    assert cfg.data.seed == MAX_SEED and cfg.data.eval_per_family == MAX_COUNT
