"""Deltas: arithmetic against numpy and validation reasons (encodings: tests/test_delta_encodings.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from fgrpo_core.deltas import (
    adapter_nbytes,
    apply_delta,
    decode,
    delta_norm,
    encode,
    subtract,
    validate_delta,
)
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.types import Adapter
from tests.delta_adapters import Q_A, Q_B, make_adapter

# --- arithmetic --------------------------------------------------------------------------------


def test_subtract_apply_and_norm_match_numpy() -> None:
    # Prepare
    local, reference = make_adapter(1), make_adapter(2)
    # Execute
    delta = subtract(local, reference)
    restored = apply_delta(reference, delta)
    norm = delta_norm(delta)
    # Assert
    for key in reference:
        np.testing.assert_allclose(delta[key].numpy(), local[key].numpy() - reference[key].numpy(), rtol=0)
        torch.testing.assert_close(restored[key], local[key], rtol=1e-6, atol=1e-6)
    flat = np.concatenate([local[k].numpy().ravel() - reference[k].numpy().ravel() for k in sorted(local)])
    assert norm == pytest.approx(float(np.linalg.norm(flat.astype(np.float64))), rel=1e-12)
    assert adapter_nbytes(delta) == 4 * flat.size


def test_apply_delta_scales_the_delta() -> None:
    # Prepare
    base, delta = make_adapter(3), make_adapter(4)
    # Execute
    applied = apply_delta(base, delta, scale=0.5)
    # Assert
    for key in base:
        expected = base[key].double().numpy() + 0.5 * delta[key].double().numpy()
        np.testing.assert_allclose(applied[key].numpy(), expected, rtol=1e-6, atol=1e-7)


def test_subtract_refuses_a_different_layout() -> None:
    # Prepare
    local, reference = make_adapter(1), make_adapter(2)
    local[Q_A] = torch.zeros(4, 64)
    # Execute / Assert
    with pytest.raises(DeltaValidationError, match=r"q_proj\.lora_A") as info:
        subtract(local, reference)
    assert info.value.reason == "shape"


# --- validation ----------------------------------------------------------------------------------


def _missing(delta: Adapter) -> str:
    del delta[Q_B]
    return Q_B


def _extra(delta: Adapter) -> str:
    key = Q_B.replace("q_proj", "k_proj")
    delta[key] = torch.zeros(64, 8)
    return key


def _shape(delta: Adapter) -> str:
    delta[Q_A] = torch.zeros(4, 64)
    return Q_A


def _dtype(delta: Adapter) -> str:
    delta[Q_A] = delta[Q_A].to(torch.bfloat16)
    return Q_A


def _nan(delta: Adapter) -> str:
    delta[Q_B][3, 2] = float("nan")
    return Q_B


def _inf(delta: Adapter) -> str:
    delta[Q_A][1, 1] = float("-inf")
    return Q_A


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (_missing, "missing_key"),
        (_extra, "extra_key"),
        (_shape, "shape"),
        (_dtype, "dtype"),
        (_nan, "non_finite"),
        (_inf, "non_finite"),
    ],
)
def test_validate_delta_names_reason_and_key(corrupt: Callable[[Adapter], str], reason: str) -> None:
    # Prepare
    reference = make_adapter(14)
    delta = subtract(make_adapter(15), reference)
    key = corrupt(delta)
    # Execute
    with pytest.raises(DeltaValidationError) as info:
        validate_delta(delta, reference)
    # Assert
    assert info.value.reason == reason
    assert info.value.key == key
    assert key in str(info.value)


def test_validate_delta_accepts_finite_values_whose_sum_overflows() -> None:
    # Prepare: every value finite, their float32 sum is +inf
    reference = make_adapter(18)
    delta = subtract(make_adapter(19), reference)
    delta[Q_A] = torch.full_like(delta[Q_A], 3e38)
    # Execute / Assert: no non_finite error
    validate_delta(delta, reference)


def test_validate_delta_accepts_a_clean_decoded_delta() -> None:
    # Prepare
    reference = make_adapter(16)
    delta, _ = decode(encode(subtract(make_adapter(17), reference), "int8"))
    # Execute
    validate_delta(delta, reference)
    # Assert
    assert delta_norm(delta) > 0
