"""Delta encodings: round trips within their stated tolerances, deterministic bytes, decode reasons."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from fgrpo_core.deltas import (
    ENCODING_METADATA_KEY,
    INT8_SCALE_SUFFIX,
    adapter_nbytes,
    decode,
    encode,
    sha256_hex,
    subtract,
)
from fgrpo_core.errors import DeltaValidationError
from tests.delta_adapters import Q_A, Q_B, header_of, make_adapter

# --- encodings ---------------------------------------------------------------------------------


def test_float32_round_trip_is_bit_exact_and_keeps_metadata() -> None:
    # Prepare
    delta = subtract(make_adapter(5), make_adapter(6))
    # Execute
    decoded, metadata = decode(encode(delta, "float32", metadata={"round": "3", "client": "c1"}))
    # Assert
    assert sorted(decoded) == sorted(delta)
    assert all(torch.equal(decoded[k], delta[k]) for k in delta)
    assert all(decoded[k].dtype == torch.float32 for k in decoded)
    assert metadata == {"round": "3", "client": "c1", ENCODING_METADATA_KEY: "float32"}


def test_bfloat16_round_trip_within_2_pow_minus_8_relative() -> None:
    # Prepare
    delta = make_adapter(7)
    # Execute
    decoded, metadata = decode(encode(delta, "bfloat16"))
    # Assert
    assert metadata[ENCODING_METADATA_KEY] == "bfloat16"
    for key, original in delta.items():
        error = (decoded[key].double() - original.double()).abs()
        assert bool((error <= 2.0**-8 * original.double().abs()).all()), key
        assert decoded[key].dtype == torch.float32


def test_int8_round_trip_within_half_a_step() -> None:
    # Prepare
    delta = make_adapter(8)
    delta[Q_B] = torch.zeros_like(delta[Q_B])  # an all-zero tensor has scale 0
    # Execute
    data = encode(delta, "int8")
    decoded, metadata = decode(data)
    # Assert
    assert metadata[ENCODING_METADATA_KEY] == "int8"
    assert sorted(decoded) == sorted(delta)  # scale tensors do not leak into the adapter
    assert f"{Q_A}{INT8_SCALE_SUFFIX}" in header_of(data)
    for key, original in delta.items():
        scale = float(original.double().abs().max()) / 127
        error = (decoded[key].double() - original.double()).abs()
        # scale/2 from rounding, plus float32 rounding of q * scale (relative 2**-24 of <= 127 scale)
        assert float(error.max()) <= scale / 2 + 127 * scale * 2.0**-23, key
    assert torch.equal(decoded[Q_B], torch.zeros_like(delta[Q_B]))


def test_int8_rounds_like_torch_round_ties_to_even() -> None:
    # Prepare: max 127 gives scale 1.0, so every k + 0.5 is an exact tie
    values = torch.arange(-254, 255, dtype=torch.float32) / 2
    # Execute
    data = encode({Q_A: values}, "int8")
    decoded, _ = decode(data)
    # Assert
    assert torch.equal(decoded[Q_A], torch.round(values.double()).float())


def test_encoding_is_deterministic_whatever_the_insertion_order() -> None:
    # Prepare
    delta = make_adapter(9)
    reversed_delta = dict(reversed(list(delta.items())))
    metadata = {f"k{i}": str(i) for i in range(8)}
    reversed_metadata = dict(reversed(list(metadata.items())))
    for dtype in ("float32", "bfloat16", "int8"):
        # Execute
        encodings = {encode(delta, dtype, metadata) for _ in range(5)}  # type: ignore[arg-type]
        encodings.add(encode(reversed_delta, dtype, reversed_metadata))  # type: ignore[arg-type]
        # Assert
        assert len(encodings) == 1, dtype
        stored_metadata = header_of(encodings.pop())["__metadata__"]
        assert isinstance(stored_metadata, dict)
        assert list(stored_metadata) == sorted(stored_metadata)


def test_encoded_sizes_int8_about_a_quarter_bf16_about_a_half() -> None:
    # Prepare: SmolLM2's hidden size, so headers do not dominate
    delta = make_adapter(10, hidden=576)
    # Execute
    sizes = {dtype: len(encode(delta, dtype)) for dtype in ("float32", "bfloat16", "int8")}  # type: ignore[arg-type]
    # Assert
    assert 0.24 < sizes["int8"] / sizes["float32"] < 0.28
    assert 0.49 < sizes["bfloat16"] / sizes["float32"] < 0.52
    assert sizes["float32"] >= adapter_nbytes(delta)


def test_int8_refuses_non_finite_values() -> None:
    # Prepare
    delta = make_adapter(11)
    delta[Q_A][0, 0] = float("inf")
    # Execute / Assert
    with pytest.raises(DeltaValidationError, match=r"q_proj\.lora_A") as info:
        encode(delta, "int8")
    assert info.value.reason == "non_finite"


def test_decode_reads_a_plain_peft_safetensors_file() -> None:
    # Prepare: what PEFT's save_pretrained writes (no fgrpo_encoding, metadata format=pt)
    adapter = make_adapter(12)
    data = st_save({k: v.to(torch.bfloat16) for k, v in adapter.items()}, metadata={"format": "pt"})
    # Execute
    decoded, metadata = decode(data)
    # Assert
    assert metadata == {"format": "pt"}
    assert all(torch.equal(decoded[k], adapter[k].to(torch.bfloat16).float()) for k in adapter)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"not a safetensors file", bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8))],
)
def test_decode_of_garbage_raises_reason_decode(garbage: bytes) -> None:
    # Execute / Assert
    with pytest.raises(DeltaValidationError) as info:
        decode(garbage)
    assert info.value.reason == "decode"


def test_decode_of_int8_without_scale_raises_reason_decode() -> None:
    # Prepare
    data = st_save({Q_A: torch.zeros(8, 64, dtype=torch.int8)}, metadata={ENCODING_METADATA_KEY: "int8"})
    # Execute / Assert
    with pytest.raises(DeltaValidationError, match=r"q_proj\.lora_A") as info:
        decode(data)
    assert info.value.reason == "decode"


def test_decode_of_int8_with_a_non_scalar_scale_raises_reason_decode() -> None:
    # Prepare: a scale that would broadcast
    data = st_save(
        {Q_A: torch.zeros(8, 64, dtype=torch.int8), Q_A + INT8_SCALE_SUFFIX: torch.ones(8, 1)},
        metadata={ENCODING_METADATA_KEY: "int8"},
    )
    # Execute / Assert
    with pytest.raises(DeltaValidationError, match="expected a float scalar") as info:
        decode(data)
    assert info.value.reason == "decode"


def test_sha256_matches_hashlib() -> None:
    # Prepare
    data = encode(make_adapter(13))
    # Execute / Assert
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
