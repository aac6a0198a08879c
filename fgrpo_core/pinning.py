"""The experiment's pin: what of its config changes results, hashed, compared on every resume.

An experiment is one sequence of rounds from one config. Resuming it with another strategy,
learning rate, data seed or owner set would append rounds of a different experiment to it, so
the coordinator stores the pin with round 0 and refuses a resume whose pin differs, naming the
fields. Settings that only say where things live or how long to run are left out: raising
``federation.rounds`` continues an experiment, it does not change it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

from fgrpo_core.config import ClientSpec, ExperimentConfig
from fgrpo_core.errors import FgrpoError
from fgrpo_core.manifest import config_hash
from fgrpo_core.strict import _Strict

# Dotted paths (and their sub-keys) that do not change what the rounds compute.
UNPINNED = (
    "federation.rounds",  # more rounds continue the experiment
    "federation.round_timeout_s",  # how long to wait, not what is computed
    "federation.max_parallel_clients",
    "federation.owner_processes",
    "federation.mode",  # embedded and distributed run the same rounds
    "output_dir",
    "store",  # where the record lives (another store has no pin to compare)
    "tracking",
    "model.hub_cache",
    "model.download",
    "model.cache_dir",
)


class ConfigPinError(FgrpoError):
    """A resume's config differs from the one the experiment was started with."""


class ConfigPin(_Strict):
    """Stored with round 0: the pinned settings and their hash."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="config_hash of `settings`.")
    settings: dict[str, Any] = Field(description="Every pinned setting, by dotted path.")


def _flatten(data: Any, path: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(data, list) and path == "clients":
        # Owners by id, so that reordering them is not a change and a removed one is named.
        return _flatten({str(c["id"]): c for c in data}, path)
    return {path: data}


def _pinned(path: str) -> bool:
    return not any(path == p or path.startswith(p + ".") for p in UNPINNED)


def config_pin(cfg: ExperimentConfig) -> ConfigPin:
    """The pin of ``cfg`` (pure: the same config gives the same pin on every machine)."""
    flat = _flatten(cfg.model_dump(mode="json"))
    settings = {k: v for k, v in sorted(flat.items()) if _pinned(k)}
    return ConfigPin(sha256=config_hash(settings), settings=settings)


_NO_DEFAULT = object()


def _default_at(path: str) -> Any:
    """The JSON default of a setting by dotted path (a setting a newer fgrpo added), if it has one."""
    parts = path.split(".")
    model: type[BaseModel] = ExperimentConfig
    if parts[0] == "clients" and len(parts) > 2:
        model, parts = ClientSpec, parts[2:]
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return _NO_DEFAULT
        if i == len(parts) - 1:
            if field.is_required():
                return _NO_DEFAULT
            return TypeAdapter(Any).dump_python(field.get_default(call_default_factory=True), mode="json")
        sub = field.annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return _NO_DEFAULT
        model = sub
    return _NO_DEFAULT


def _changed(path: str, stored: dict[str, Any], current: dict[str, Any]) -> bool:
    if path not in stored:  # added by a newer fgrpo: a change only when set to a non-default
        return current[path] != _default_at(path)
    return stored[path] != current.get(path, _NO_DEFAULT)


def _owners(settings: dict[str, Any]) -> set[str]:
    return {p.split(".")[1] for p in settings if p.startswith("clients.")}


def differences(stored: ConfigPin, current: ConfigPin) -> list[str]:
    """'path: stored -> current' for each pinned setting that differs; an owner added or removed
    is one line."""
    if stored.sha256 == current.sha256:
        return []
    was, now = _owners(stored.settings), _owners(current.settings)
    moved = [f"clients.{c}: owner removed" for c in sorted(was - now)]
    moved += [f"clients.{c}: owner added" for c in sorted(now - was)]
    whole = tuple(f"clients.{c}." for c in was ^ now)
    absent = "<absent>"
    paths = sorted(p for p in set(stored.settings) | set(current.settings) if not p.startswith(whole))
    changed = [
        f"{p}: {json.dumps(stored.settings.get(p, absent))} -> {json.dumps(current.settings.get(p, absent))}"
        for p in paths
        if _changed(p, stored.settings, current.settings)
    ]
    return moved + changed  # empty when only settings a newer fgrpo added differ, at their defaults


def check_pin(name: str, stored: ConfigPin, current: ConfigPin) -> None:
    """Raise ConfigPinError naming each differing field and how to start a new experiment."""
    changed = differences(stored, current)
    if not changed:
        return
    shown = "\n  ".join(changed[:20]) + (f"\n  ... and {len(changed) - 20} more" if len(changed) > 20 else "")
    raise ConfigPinError(
        f"experiment {name!r} was started with another config; these settings differ from the "
        f"stored pin (stored -> now):\n  {shown}\nResume with the original settings, or start a new "
        f"experiment: give the config another `name:` (raising federation.rounds is allowed)."
    )
