"""Manifests (SPEC §1 step 5, §5) and store keys (SPEC §7)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fgrpo_core.config import LoraSettings
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.manifest import (
    ClientManifest,
    GlobalManifest,
    check_sha256,
    config_hash,
)
from fgrpo_core.types import ClientStats
from fgrpo_io import layout
from fgrpo_io.store import StoreError

DELTA = b"not really safetensors, but bytes all the same"
EXPECTED: dict[str, Any] = {
    "experiment": "demo",
    "round": 3,
    "client_id": "alice",
    "base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "base_revision": "local",
    "adapter_config_hash": "ab" * 32,
}


def _client_manifest(**overrides: Any) -> ClientManifest:
    fields: dict[str, Any] = {
        **EXPECTED,
        "encoding": "float32",
        "sha256": hashlib.sha256(DELTA).hexdigest(),
        "nbytes": len(DELTA),
        "delta_key": "fgrpo/demo/clients/alice/round-0003/delta.safetensors",
        "created_at": "2026-11-25T12:00:00+00:00",
    }
    fields.update(overrides)
    stats = ClientStats(
        client_id=fields["client_id"],
        round=fields["round"],
        n_k=32,
        r_pre=0.25,
        r_post=0.5,
        sigma=0.4,
        sigma_diff=0.3,
        m=16,
        reward_lo=0.0,
        reward_hi=1.0,
        tokens_generated=1234,
        wall_time_s=5.5,
    )
    return ClientManifest(stats=stats, **fields)


def test_client_manifest_json_round_trip() -> None:
    # Prepare
    manifest = _client_manifest()
    # Execute
    back = ClientManifest.model_validate_json(manifest.model_dump_json())
    # Assert
    assert back == manifest
    assert back.stats.r_post == 0.5
    assert json.loads(manifest.model_dump_json())["schema_version"] == 1


def test_global_manifest_json_round_trip() -> None:
    # Prepare
    manifest = GlobalManifest(
        experiment="demo",
        round=4,
        base_model_id="tiny-llama-h128-l4-w300-s0",
        base_revision="local",
        adapter_config_hash="cd" * 32,
        sha256="ef" * 32,
        nbytes=1024,
        adapter_key="fgrpo/demo/global/round-0004/adapter.safetensors",
        parent_key="fgrpo/demo/global/round-0003/adapter.safetensors",
        clients=["alice", "bob"],
        strategy="fgrpo",
    )
    # Execute
    back = GlobalManifest.model_validate_json(manifest.model_dump_json())
    # Assert
    assert back == manifest
    assert back.created_at == manifest.created_at


def test_manifests_reject_unknown_fields_and_malformed_values() -> None:
    # Prepare
    data = json.loads(_client_manifest().model_dump_json())
    # Execute / Assert
    with pytest.raises(ValidationError, match="extra"):
        ClientManifest.model_validate({**data, "note": "x"})
    with pytest.raises(ValidationError, match="ISO-8601"):
        ClientManifest.model_validate({**data, "created_at": "yesterday"})
    with pytest.raises(ValidationError, match="sha256"):
        ClientManifest.model_validate({**data, "sha256": "XYZ"})


def test_check_sha256() -> None:
    # Prepare
    good = hashlib.sha256(DELTA).hexdigest()
    # Execute / Assert
    check_sha256(DELTA, good, "delta of alice")
    with pytest.raises(DeltaValidationError, match="delta of alice") as caught:
        check_sha256(DELTA + b"x", good, "delta of alice")
    assert caught.value.reason == "sha256"


def test_config_hash_reference_value() -> None:
    # Prepare: the canonical JSON written by hand.
    obj = {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    canonical = '{"alpha":16,"r":8,"target_modules":["q_proj","v_proj"]}'
    # Execute / Assert
    assert config_hash(obj) == hashlib.sha256(canonical.encode()).hexdigest()
    # A set (as PEFT stores target_modules) hashes like the sorted list.
    assert config_hash({**obj, "target_modules": {"v_proj", "q_proj"}}) == config_hash(obj)
    # A pydantic model hashes like its JSON dump, and a changed field changes the hash.
    lora = LoraSettings()
    assert config_hash(lora) == config_hash(lora.model_dump(mode="json"))
    assert config_hash(LoraSettings(r=4)) != config_hash(lora)


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=8))
def test_config_hash_ignores_key_order(mapping: dict[str, Any]) -> None:
    # Prepare: the same items inserted in reverse order.
    reordered = dict(reversed(list(mapping.items())))
    # Execute / Assert
    assert config_hash(reordered) == config_hash(mapping)


def test_layout_keys_match_spec() -> None:
    # Execute / Assert: SPEC §7, written out literally.
    assert layout.global_adapter_key("fgrpo", "demo", 3) == "fgrpo/demo/global/round-0003/adapter.safetensors"
    assert layout.global_manifest_key("fgrpo", "demo", 3) == "fgrpo/demo/global/round-0003/manifest.json"
    assert (
        layout.client_delta_key("fgrpo", "demo", "alice", 12)
        == "fgrpo/demo/clients/alice/round-0012/delta.safetensors"
    )
    assert (
        layout.client_manifest_key("fgrpo", "demo", "alice", 12)
        == "fgrpo/demo/clients/alice/round-0012/manifest.json"
    )
    assert layout.state_key("fgrpo", "demo", 0) == "fgrpo/demo/state/round-0000.json"
    assert layout.client_prefix("fgrpo", "demo", "alice") == "fgrpo/demo/clients/alice/"
    assert layout.global_prefix("fgrpo", "demo") == "fgrpo/demo/global/"
    assert layout.state_prefix("fgrpo", "demo") == "fgrpo/demo/state/"
    assert (
        layout.global_adapter_key("a/b", "Exp.1", 10000) == "a/b/Exp.1/global/round-10000/adapter.safetensors"
    )


def test_layout_empty_prefix_has_no_leading_slash() -> None:
    # Execute / Assert
    assert layout.global_adapter_key("", "demo", 1) == "demo/global/round-0001/adapter.safetensors"
    assert layout.client_delta_key("", "demo", "bob", 1) == "demo/clients/bob/round-0001/delta.safetensors"
    assert layout.state_key("", "demo", 1) == "demo/state/round-0001.json"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: layout.client_prefix("fgrpo", "demo", "../bob"), "client id"),
        (lambda: layout.client_prefix("fgrpo", "demo", "Alice"), "client id"),
        (lambda: layout.client_delta_key("fgrpo", "demo", "a/b", 0), "client id"),
        (lambda: layout.state_key("fgrpo", "../demo", 0), "experiment name"),
        (lambda: layout.state_key("fgrpo/../x", "demo", 0), "store prefix"),
        (lambda: layout.state_key("/fgrpo", "demo", 0), "store prefix"),
        (lambda: layout.state_key("fgrpo/", "demo", 0), "store prefix"),
        (lambda: layout.state_key("fgrpo", "demo", -1), "negative"),
    ],
)
def test_layout_rejects_bad_parts(call: Any, match: str) -> None:
    # Execute / Assert
    with pytest.raises(StoreError, match=match):
        call()


def test_committed_rounds_parses_state_keys() -> None:
    # Prepare: state keys out of order, among keys that are not state keys.
    keys = [
        layout.state_key("fgrpo", "demo", 2),
        layout.global_adapter_key("fgrpo", "demo", 5),
        layout.state_key("fgrpo", "demo", 0),
        layout.client_manifest_key("fgrpo", "demo", "state", 7),
        "fgrpo/demo/state/round-0001.json.tmp",
        layout.state_key("fgrpo", "demo", 10),
    ]
    # Execute
    rounds = layout.committed_rounds(keys)
    # Assert
    assert rounds == [0, 2, 10]
