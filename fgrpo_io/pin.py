"""The experiment's config pin in the store: written with round 0, compared on every resume."""

from __future__ import annotations

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.pinning import ConfigPin, check_pin, config_pin
from fgrpo_io import layout
from fgrpo_io.exchange import identity
from fgrpo_io.store import ObjectExistsError, ObjectStore, get_json, put_json


def pin_or_check(store: ObjectStore, cfg: ExperimentConfig) -> ConfigPin:
    """Store ``cfg``'s pin if the experiment has none; else raise ConfigPinError when it differs.

    An experiment started before pins existed gets its pin at its next resume.
    """
    ident = identity(cfg)
    key = layout.config_pin_key(ident.prefix, ident.experiment)
    current = config_pin(cfg)
    if not store.exists(key):
        try:
            put_json(store, key, current)
            return current
        except ObjectExistsError:  # written meanwhile: compare with it like any stored pin
            pass
    stored = ConfigPin.model_validate(get_json(store, key))
    check_pin(cfg.name, stored, current)
    return stored
