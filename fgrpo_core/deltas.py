"""Adapter deltas: arithmetic, safetensors encoding, hashing and validation (SPEC §1 step 5, §5).

A delta is ``theta_k - theta_t`` over the PEFT state-dict names of the LoRA adapter. It travels
as safetensors bytes in one of three encodings, with these round-trip tolerances per element
(``x`` the original value, ``x_hat`` the decoded float32 value):

- ``float32``: bit-exact (``torch.equal``).
- ``bfloat16``: ``|x_hat - x| <= 2**-8 * |x|`` (round to nearest, 8 significant bits; normal
  numbers; halves the size).
- ``int8``: per-tensor symmetric quantisation, ``scale = max|x| / 127``,
  ``|x_hat - x| <= scale / 2`` up to float32 rounding of the product (relative 2**-24);
  about a quarter of the float32 size. Each tensor's scale is stored as a float32 scalar
  tensor named ``<key>.__int8_scale__``.

The encoding name is in the safetensors metadata under ``fgrpo_encoding``. Encoded bytes are
deterministic for the same input: safetensors orders tensors itself, and the metadata (whose
order the library leaves to a hash map) is rewritten in sorted order.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Literal, get_args

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.flat import empty_like_layout, layout_of
from fgrpo_core.types import Adapter

Encoding = Literal["float32", "bfloat16", "int8"]
ENCODINGS: tuple[str, ...] = get_args(Encoding)
ENCODING_METADATA_KEY = "fgrpo_encoding"
INT8_SCALE_SUFFIX = ".__int8_scale__"
_INT8_MAX = 127
_HEADER_LEN_BYTES = 8


# --- layout checks ---------------------------------------------------------------------------


def check_keys(candidate: Adapter, reference: Adapter, what: str = "delta") -> None:
    """Raise DeltaValidationError unless ``candidate`` has exactly the keys of ``reference``."""
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise DeltaValidationError(
            "missing_key",
            f"{what} lacks {len(missing)} key(s) of the global adapter, first {missing[0]!r}: "
            "it was made for another adapter layout (LoRA rank or target modules)",
            key=missing[0],
        )
    extra = sorted(set(candidate) - set(reference))
    if extra:
        raise DeltaValidationError(
            "extra_key",
            f"{what} has {len(extra)} key(s) not in the global adapter, first {extra[0]!r}: "
            "it was made for another adapter layout (LoRA rank or target modules)",
            key=extra[0],
        )


def _check_shape(key: str, tensor: torch.Tensor, want: torch.Tensor, what: str) -> None:
    got, expected = tuple(tensor.shape), tuple(want.shape)
    if got != expected:
        raise DeltaValidationError(
            "shape", f"{what}[{key!r}] has shape {got}, the global adapter {expected}", key=key
        )


def check_layout(candidate: Adapter, reference: Adapter, what: str = "delta") -> None:
    """Raise DeltaValidationError unless ``candidate`` has exactly the keys and shapes of ``reference``."""
    check_keys(candidate, reference, what)
    for key in sorted(reference):
        _check_shape(key, candidate[key], reference[key], what)


def validate_delta(delta: Adapter, reference: Adapter) -> None:
    """Check a client's delta against the global adapter: keys, then per key shape, dtype, finiteness.

    Raises DeltaValidationError with ``reason`` in missing_key, extra_key, shape, dtype,
    non_finite and ``key`` set to the first offending tensor (keys visited in sorted order).
    """
    check_keys(delta, reference)
    for key in sorted(reference):
        tensor, want = delta[key], reference[key]
        _check_shape(key, tensor, want, "delta")
        if tensor.dtype != want.dtype:
            raise DeltaValidationError(
                "dtype",
                f"delta[{key!r}] has dtype {tensor.dtype}, the global adapter {want.dtype}: "
                "decode deltas with fgrpo_core.deltas.decode (it returns float32)",
                key=key,
            )
        # A NaN or Inf anywhere makes the sum non-finite, so a finite sum clears the tensor with
        # one reduction (10x faster than isfinite().all() in bench/comm.py); a non-finite sum
        # (a bad value, or finite values overflowing float32) is then counted exactly.
        bad = 0 if math.isfinite(float(tensor.sum())) else int((~torch.isfinite(tensor)).sum())
        if bad:
            raise DeltaValidationError(
                "non_finite",
                f"delta[{key!r}] has {bad} non-finite value(s) (NaN or Inf): local training diverged",
                key=key,
            )


# --- arithmetic ------------------------------------------------------------------------------


def subtract(local: Adapter, reference: Adapter) -> Adapter:
    """``local - reference`` per key, in float32 (the delta a client uploads)."""
    check_layout(local, reference, what="local adapter")
    return {
        key: local[key].detach().to(torch.float32) - reference[key].detach().to(torch.float32)
        for key in sorted(reference)
    }


def apply_delta(base: Adapter, delta: Adapter, scale: float = 1.0) -> Adapter:
    """``base + scale * delta`` per key, computed in float64 and returned in float32."""
    check_layout(delta, base)
    return {
        key: (base[key].detach().double() + scale * delta[key].detach().double()).to(torch.float32)
        for key in sorted(base)
    }


def delta_norm(delta: Adapter) -> float:
    """Global L2 norm over every tensor of the delta, accumulated in float64."""
    squares = sum((float(delta[key].detach().double().square().sum()) for key in sorted(delta)), 0.0)
    return math.sqrt(squares)


def adapter_nbytes(adapter: Adapter) -> int:
    """Bytes held by the tensors (not the encoded size)."""
    return sum(t.numel() * t.element_size() for t in adapter.values())


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of encoded bytes, as written into the manifest."""
    return hashlib.sha256(data).hexdigest()


# --- encoding --------------------------------------------------------------------------------


def _quantise_int8(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-tensor int8: returns (q, float32 scalar scale) with x ~= q * scale.

    Computed with numpy in float64 (x / scale exact enough that rounding to the nearest integer,
    ties to even as torch.round, is decided on the true quotient). numpy rather than torch here:
    torch's rounding kernels go multi-threaded from 2,048 elements, and on a busy machine each
    such call can stall for milliseconds waiting for its OpenMP threads (bench/comm.py measured
    2 s to encode SmolLM2's 420-tensor adapter that way, 0.06 s with numpy).
    """
    values = tensor.detach().to(torch.float64).numpy()
    max_abs = float(np.abs(values).max()) if values.size else 0.0
    # Quantise against the float32 scale actually stored, so the bound scale/2 holds for it.
    scale = torch.tensor(max_abs / _INT8_MAX, dtype=torch.float32)
    if float(scale) == 0.0:
        return torch.zeros(values.shape, dtype=torch.int8), scale
    q = np.clip(np.rint(values / float(scale)), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    return torch.from_numpy(q), scale


def _canonical(data: bytes) -> bytes:
    """Rewrite the safetensors header with the metadata in sorted order (byte-deterministic)."""
    header_len = int.from_bytes(data[:_HEADER_LEN_BYTES], "little")
    header = json.loads(data[_HEADER_LEN_BYTES : _HEADER_LEN_BYTES + header_len])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # safetensors aligns the data to 8 bytes
    body = data[_HEADER_LEN_BYTES + header_len :]
    return len(header_bytes).to_bytes(_HEADER_LEN_BYTES, "little") + header_bytes + body


def encode(
    adapter: Adapter,
    dtype: Encoding = "float32",
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Serialise an adapter or delta to safetensors bytes in the given encoding."""
    if dtype not in ENCODINGS:
        raise DeltaValidationError("manifest", f"unknown encoding {dtype!r}; use one of {ENCODINGS}")
    extra = dict(metadata or {})
    if ENCODING_METADATA_KEY in extra:
        raise DeltaValidationError(
            "manifest",
            f"metadata key {ENCODING_METADATA_KEY!r} is reserved; pass the encoding as dtype",
        )
    bad_meta = sorted(k for k, v in extra.items() if not isinstance(k, str) or not isinstance(v, str))
    if bad_meta:
        raise DeltaValidationError("manifest", f"metadata values must be strings: {bad_meta}")

    tensors: dict[str, torch.Tensor] = {}
    for key in sorted(adapter):
        if key.endswith(INT8_SCALE_SUFFIX):
            raise DeltaValidationError(
                "extra_key",
                f"key {key!r} ends with the reserved suffix {INT8_SCALE_SUFFIX!r}",
                key=key,
            )
        tensor = adapter[key].detach().cpu()
        if dtype == "int8":
            if not bool(torch.isfinite(tensor).all()):
                raise DeltaValidationError(
                    "non_finite", f"{key!r} has non-finite values; int8 cannot encode them", key=key
                )
            q, scale = _quantise_int8(tensor)
            tensors[key] = q.contiguous()
            tensors[key + INT8_SCALE_SUFFIX] = scale.contiguous()
        else:
            # clone: safetensors refuses tensors that share storage (views of one parameter).
            tensors[key] = tensor.to(getattr(torch, dtype)).contiguous().clone()

    raw = _st_save(tensors, metadata={**extra, ENCODING_METADATA_KEY: dtype})
    return _canonical(raw)


def _read_metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:_HEADER_LEN_BYTES], "little")
    header = json.loads(data[_HEADER_LEN_BYTES : _HEADER_LEN_BYTES + header_len])
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return {str(k): str(v) for k, v in metadata.items()}


def decode(data: bytes) -> tuple[Adapter, dict[str, str]]:
    """Parse safetensors bytes into float32 tensors (int8 dequantised) and the metadata.

    Files without ``fgrpo_encoding`` (e.g. PEFT's own ``adapter_model.safetensors``) are read
    as plain floating tensors. Anything unreadable raises DeltaValidationError(reason="decode").
    """
    try:
        raw = _st_load(bytes(data))
        metadata = _read_metadata(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, AttributeError) as err:
        raise DeltaValidationError(
            "decode", f"not a readable safetensors file ({len(data)} bytes): {err}"
        ) from err

    encoding = metadata.get(ENCODING_METADATA_KEY, "float32")
    if encoding not in ENCODINGS:
        raise DeltaValidationError("decode", f"unknown {ENCODING_METADATA_KEY} {encoding!r}")

    # Decoded straight into one flat float32 buffer (fgrpo_core/flat.py), which the streamed
    # aggregation then reads without a copy.
    sources: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for key in sorted(k for k in raw if not k.endswith(INT8_SCALE_SUFFIX)):
        tensor = raw[key]
        if encoding == "int8":
            scale_key = key + INT8_SCALE_SUFFIX
            if tensor.dtype != torch.int8 or scale_key not in raw:
                raise DeltaValidationError(
                    "decode",
                    f"int8 tensor {key!r} lacks its int8 data or scale {scale_key!r}",
                    key=key,
                )
            scale = raw[scale_key]
            if scale.dim() != 0 or not scale.is_floating_point():
                raise DeltaValidationError(
                    "decode",
                    f"int8 scale {scale_key!r} has shape {tuple(scale.shape)} and dtype {scale.dtype}, "
                    "expected a float scalar",
                    key=key,
                )
            sources[key] = (tensor, scale.to(torch.float32))
        else:
            if not tensor.is_floating_point():
                raise DeltaValidationError(
                    "decode", f"tensor {key!r} has dtype {tensor.dtype}, expected a float", key=key
                )
            sources[key] = (tensor, None)
    _, adapter = empty_like_layout(layout_of({k: t for k, (t, _) in sources.items()}))
    for key, (tensor, int8_scale) in sources.items():
        if int8_scale is None:
            adapter[key].copy_(tensor)
        else:
            # One float32 multiply of two float32 values (|q| <= 127 is exact) rounds once, to
            # the same result as the exact float64 product rounded to float32.
            torch.mul(tensor, int8_scale, out=adapter[key])
    orphans = sorted(
        k for k in raw if k.endswith(INT8_SCALE_SUFFIX) and k[: -len(INT8_SCALE_SUFFIX)] not in raw
    )
    if orphans:
        raise DeltaValidationError("decode", f"scale without tensor: {orphans[0]!r}", key=orphans[0])
    return adapter, metadata
