"""One owner's update checked once per object: the manifest's envelope, then its stats and delta."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from fgrpo_core.commit_gate import gate_reason
from fgrpo_core.deltas import encode
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.manifest import ClientManifest
from fgrpo_core.types import ClientStats
from fgrpo_core.update_checks import (
    Expected,
    check_envelope,
    check_stats,
    check_update,
    expected_delta_nbytes,
)
from fgrpo_io import exchange
from fgrpo_io.store import LocalStore, ObjectTooLargeError

LAYOUT = {"a.lora_A.weight": torch.zeros(4, 8), "a.lora_B.weight": torch.zeros(8, 4)}
IDENT = exchange.Identity("fgrpo", "demo", "tiny", "local", "ab" * 32)


def _stats(**overrides: Any) -> ClientStats:
    values: dict[str, Any] = {
        "client_id": "alice",
        "round": 3,
        "n_k": 16,
        "r_pre": 0.25,
        "r_post": 0.5,
        "sigma": 0.4,
        "sigma_diff": 0.3,
        "m": 16,
        "reward_lo": 0.0,
        "reward_hi": 1.0,
    }
    return ClientStats(**{**values, **overrides})


def _expected() -> Expected:
    return exchange.expected_update(IDENT, 3, "alice", LAYOUT, "float32")


def _manifest(**overrides: Any) -> ClientManifest:
    data = encode(LAYOUT, "float32")
    exp = _expected()
    fields: dict[str, Any] = {
        "experiment": exp.experiment,
        "round": exp.round,
        "client_id": exp.client_id,
        "base_model_id": exp.base_model_id,
        "base_revision": exp.base_revision,
        "adapter_config_hash": exp.adapter_config_hash,
        "encoding": "float32",
        "sha256": hashlib.sha256(data).hexdigest(),
        "nbytes": len(data),
        "delta_key": exp.delta_key,
        "stats": _stats(),
    }
    return ClientManifest(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("field", "found"),
    [
        ("round", 2),  # replay of an earlier round
        ("experiment", "other-experiment"),
        ("client_id", "mallory"),  # a delta that claims to be another client's
        ("base_model_id", "another/base-model"),
        ("base_revision", "v2"),
        ("adapter_config_hash", "00" * 32),
        ("delta_key", "fgrpo/demo/clients/bob/round-0003/delta.safetensors"),  # outside its prefix
        ("encoding", "int8"),
    ],
)
def test_the_envelope_rejects_each_mismatch(field: str, found: Any) -> None:
    # Prepare: the unmodified manifest passes the same check.
    check_envelope(_manifest(), _expected())
    manifest = _manifest(**{field: found})
    # Execute
    with pytest.raises(DeltaValidationError) as caught:
        check_envelope(manifest, _expected())
    # Assert: the message names the field and both values.
    assert caught.value.reason == "manifest"
    assert f"'{field}'" in str(caught.value) and repr(found) in str(caught.value)


def test_the_expected_size_is_exact_and_a_lie_about_it_is_refused() -> None:
    # Prepare: the size of a real delta of this layout in each encoding
    sizes = {
        enc: len(encode({k: torch.randn(v.shape) for k, v in LAYOUT.items()}, enc))
        for enc in ("float32", "bfloat16", "int8")
    }
    # Execute
    expected = {enc: expected_delta_nbytes(LAYOUT, enc) for enc in sizes}  # type: ignore[arg-type]
    # Assert: values do not change a safetensors file's size; a claim of 10 bytes is refused.
    assert expected == sizes
    with pytest.raises(DeltaValidationError, match="claims 10 bytes") as caught:
        check_envelope(_manifest(nbytes=10), _expected())
    assert caught.value.reason == "size"


def test_a_store_read_never_goes_beyond_the_limit(tmp_path: Path) -> None:
    # Prepare: 1 MiB under a key, read with a 1 KiB limit
    store = LocalStore(tmp_path)
    store.put_bytes("exp/big.bin", b"x" * (1 << 20))
    # Execute / Assert
    with pytest.raises(ObjectTooLargeError, match="1024 bytes allowed"):
        store.get_bytes("exp/big.bin", max_bytes=1024)
    assert store.get_bytes("exp/big.bin", max_bytes=1 << 20) == b"x" * (1 << 20)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"round": 2}, "a replay or a late delta"),
        ({"client_id": "bob"}, "reported stats of client 'bob'"),
        ({"n_k": 10**400}, "absurd counts ['n_k']"),
        ({"m": 10**12}, "absurd counts ['m']"),
        ({"n_k": 17}, "enrolled with 16"),
        ({"r_post": float("nan")}, "non-finite ['r_post']"),
        ({"wall_time_s": float("inf")}, "non-finite ['wall_time_s']"),
        ({"reward_lo": 1.0, "reward_hi": 1.0}, "reward_hi must exceed reward_lo"),
    ],
)
def test_stats_that_cannot_be_weighted_reject_the_owner(overrides: dict[str, Any], needle: str) -> None:
    # Prepare: honest stats pass, enrolled with 16 training prompts
    check_stats("alice", _stats(), 3, enrolled_n=16)
    # Execute
    with pytest.raises(DeltaValidationError) as caught:
        check_stats("alice", _stats(**overrides), 3, enrolled_n=16)
    # Assert
    assert caught.value.reason in {"manifest", "stats"}
    assert needle in str(caught.value)


def test_check_update_checks_the_delta_after_the_stats() -> None:
    # Prepare: a delta with a NaN and one with a missing key
    nan = {k: v.clone() for k, v in LAYOUT.items()}
    nan["a.lora_B.weight"][0, 0] = float("nan")
    missing = {"a.lora_A.weight": LAYOUT["a.lora_A.weight"]}
    # Execute / Assert
    check_update("alice", _stats(), LAYOUT, LAYOUT, 3, 16)
    with pytest.raises(DeltaValidationError) as caught:
        check_update("alice", _stats(), nan, LAYOUT, 3, 16)
    assert caught.value.reason == "non_finite"
    with pytest.raises(DeltaValidationError) as caught:
        check_update("alice", _stats(), missing, LAYOUT, 3, 16)
    assert caught.value.reason == "missing_key"


def test_the_commit_gate_refuses_a_non_finite_or_losing_global() -> None:
    # Prepare
    finite = {k: torch.ones_like(v) for k, v in LAYOUT.items()}
    huge = {k: torch.full_like(v, float("inf")) for k, v in LAYOUT.items()}
    # Execute / Assert: finite and within the tolerance passes; the rest names why.
    assert gate_reason(finite, 0.40, 0.42, max_eval_drop=0.05) == ""
    assert gate_reason(finite, 0.30, 0.42, max_eval_drop=None) == ""
    assert "more than federation.max_eval_drop=0.05" in gate_reason(finite, 0.30, 0.42, max_eval_drop=0.05)
    assert "non-finite values in 2 tensor(s)" in gate_reason(huge, 0.5, 0.42, max_eval_drop=None)
    assert "evaluation is not finite" in gate_reason(finite, float("nan"), 0.42, max_eval_drop=None)
