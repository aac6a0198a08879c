"""Malformed configuration: parse_config and the CLI name the field and write nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fgrpo_app.cli import app
from fgrpo_core.config import parse_config
from fgrpo_core.errors import ConfigError
from tests.conftest import tiny_config

pytestmark = [pytest.mark.slow]


# --- malformed configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "change", "needle"),
    [
        ("federation", {"min_clients": 0}, "federation.min_clients"),
        ("federation", {"min_clients": 4}, "federation.min_clients (4) exceeds"),
        ("federation", {"round_timeout_s": -1}, "federation.round_timeout_s"),
        ("aggregation", {"norm_action": "drop"}, "aggregation.norm_action"),
        ("aggregation", {"max_delta_norm_ratio": 1.0}, "aggregation.max_delta_norm_ratio"),
        ("aggregation", {"gain_source": "trust-me"}, "aggregation.gain_source"),
        ("aggregation", {"weight_cap": 0.0}, "aggregation.weight_cap"),
        ("aggregation", {"gain_clip": 0}, "aggregation.gain_clip"),
    ],
)
def test_malformed_config_names_the_field_and_writes_nothing(
    tmp_path: Path, model_cache: Path, section: str, change: dict[str, Any], needle: str
) -> None:
    # Prepare
    out = tmp_path / "out"
    raw = tiny_config(model_cache, out, **{section: change})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    # Execute
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    # Assert: both name the field; the CLI stops before any store, tracker or flow exists.
    assert needle in str(err.value)
    assert result.exit_code == 2 and needle in result.output
    assert not out.exists()
