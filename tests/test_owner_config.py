"""An owner's flow reads only its own config: the experiment and owner it holds, in its own folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fgrpo_core.errors import ConfigError
from flows.owner import owner_config
from tests.conftest import tiny_config


def _owner_setup(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The owner's config folder with its config, as the worker's environment names it."""
    raw: dict[str, Any] = tiny_config(model_cache, tmp_path)
    folder = tmp_path / "owner"
    folder.mkdir()
    path = folder / "owner.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("FGRPO_OWNER_CONFIG", str(path))
    monkeypatch.setenv("FGRPO_CLIENT_ID", "owner-a")
    monkeypatch.delenv("FGRPO_OWNER_CONFIG_DIR", raising=False)
    return path


def test_owner_config_checks_what_the_coordinator_asked(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    _owner_setup(tmp_path, model_cache, monkeypatch)
    monkeypatch.setenv("FGRPO_DEVICE", "cpu")
    # Execute / Assert
    assert owner_config("owner-a", "tiny-test").grpo.device == "cpu"
    with pytest.raises(ConfigError, match="configures 'tiny-test'"):
        owner_config("owner-a", "another")
    with pytest.raises(ConfigError, match="refuses to train 'owner-b'"):
        owner_config("owner-b", "tiny-test")
    monkeypatch.delenv("FGRPO_OWNER_CONFIG")
    with pytest.raises(ConfigError, match="FGRPO_OWNER_CONFIG"):
        owner_config("owner-a", "tiny-test")


def test_experiment_config_is_read_only_inside_the_owners_folder(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a second, valid config of the same experiment outside the owner's folder.
    path = _owner_setup(tmp_path, model_cache, monkeypatch)
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(path.read_text())
    (path.parent / "link.yaml").symlink_to(outside)
    # Execute / Assert: a file of the folder is read, by relative name or absolute path.
    assert owner_config("owner-a", "tiny-test", "owner.yaml").name == "tiny-test"
    assert owner_config("owner-a", "tiny-test", str(path)).name == "tiny-test"
    # Execute / Assert: anything resolving outside it is refused, naming the folder to use.
    for attempt in (str(outside), "../elsewhere.yaml", "link.yaml", "/etc/hostname"):
        with pytest.raises(
            ConfigError, match=r"refused: it resolves to .* outside this owner's config folder"
        ):
            owner_config("owner-a", "tiny-test", attempt)


def test_experiment_config_follows_the_configured_folder(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: FGRPO_OWNER_CONFIG_DIR names another folder than FGRPO_OWNER_CONFIG's.
    path = _owner_setup(tmp_path, model_cache, monkeypatch)
    other = tmp_path / "configs"
    other.mkdir()
    (other / "run-2.yaml").write_text(path.read_text())
    monkeypatch.setenv("FGRPO_OWNER_CONFIG_DIR", str(other))
    # Execute / Assert
    assert owner_config("owner-a", "tiny-test", "run-2.yaml").name == "tiny-test"
    with pytest.raises(ConfigError, match="outside this owner's config folder"):
        owner_config("owner-a", "tiny-test", str(path))
    # Prepare / Execute / Assert: with no folder configured at all, any parameter is refused.
    monkeypatch.delenv("FGRPO_OWNER_CONFIG_DIR")
    monkeypatch.delenv("FGRPO_OWNER_CONFIG")
    with pytest.raises(ConfigError, match="configured no config folder"):
        owner_config("owner-a", "tiny-test", str(path))
