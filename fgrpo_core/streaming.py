"""The round's new global adapter from deltas streamed one at a time into one flat buffer.

The coordinator never holds a round's deltas together. ``load(cid)`` hands over owner cid's delta
(read and decoded afresh from the store by the I/O layer, or taken from memory by the in-process
runner); it is checked, added to one flat float32 accumulator and dropped, so memory is the
global adapter + the accumulator + one delta whatever K is (docs/design.md, "Aggregation").

- Weighted rules (fedavg, reward, fgrpo): ``acc = theta + eta w_1 (f_1 delta_1)``, then per
  owner in sorted id order ``acc.add_(f_k * delta_k, alpha=eta * w_k)`` (``f_k`` the clip factor; no product when 1). The
  same float32 operations in the same order as ``aggregate_deltas`` on screened deltas, element
  by element: the same bits, within ``accumulation_error_factor(K)`` of the exact value.
- Coordinate-wise rules (median, trimmed_mean) need all K values of a coordinate at once: they
  fill a (K, block) buffer of at most ``buffer_bytes`` and pass over the deltas once per block
  (ceil(4 K P / buffer_bytes) passes for P parameters; one pass below the bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal

import torch

from fgrpo_core.deltas import check_layout
from fgrpo_core.errors import AggregationError, DeltaValidationError
from fgrpo_core.flat import FlatLayout, as_flat, layout_of, matches, views
from fgrpo_core.robust import ROBUST_STRATEGIES, trimmed_count
from fgrpo_core.settings import AggregationSettings
from fgrpo_core.types import Adapter

DeltaSource = Callable[[str], Adapter]
# The robust rules' (K, block) buffer: 256 MiB holds SmolLM2's r8 deltas (9.8 MB) for K = 27 in one pass.
ROBUST_BUFFER_BYTES = 256 << 20


def _checked(load: DeltaSource, cid: str, reference: Adapter, layout: FlatLayout) -> Adapter:
    delta = load(cid)
    if not matches(delta, layout):  # the fast check failed: let check_layout name the difference
        try:
            check_layout(delta, reference, what=f"delta of client {cid!r}")
        except DeltaValidationError as err:
            raise AggregationError(str(err)) from err
    return delta


def _check_weights(weights: Mapping[str, float], factors: Mapping[str, float]) -> None:
    if set(weights) != set(factors):
        raise AggregationError(
            f"client sets differ: weights only {sorted(set(weights) - set(factors))}, "
            f"factors only {sorted(set(factors) - set(weights))}; weight exactly the kept deltas"
        )
    if not weights:
        raise AggregationError("no deltas to aggregate")
    values = [float(weights[c]) for c in sorted(weights)] + [float(factors[c]) for c in sorted(factors)]
    if not all(math.isfinite(v) and v >= 0.0 for v in values):
        raise AggregationError(f"weights and clip factors must be finite and >= 0: {weights}, {factors}")
    if abs(sum(weights.values()) - 1.0) > 1e-6:
        raise AggregationError(
            f"weights sum to {sum(weights.values())}, not 1: recompute them over the kept clients"
        )


def weighted_sum(
    global_adapter: Adapter,
    load: DeltaSource,
    weights: Mapping[str, float],
    factors: Mapping[str, float],
    server_lr: float,
    lora_aggregation: Literal["separate", "freeze_a"] = "separate",
) -> Adapter:
    """theta + eta * sum_k w_k f_k delta_k, one delta in memory at a time, in float32."""
    _check_weights(weights, factors)
    layout = layout_of(global_adapter)
    frozen = [k for k in layout.keys if "lora_A" in k] if lora_aggregation == "freeze_a" else []
    theta = as_flat(global_adapter, layout)
    acc: torch.Tensor | None = None
    with torch.no_grad():
        for cid in sorted(weights):
            delta = _checked(load, cid, global_adapter, layout)
            for key in frozen:
                if bool(delta[key].ne(0).any()):
                    raise AggregationError(
                        f"freeze_a: client {cid!r} changed {key!r}; train with lora.freeze_a: true "
                        "or use lora_aggregation 'separate'"
                    )
            flat, factor = as_flat(delta, layout), float(factors[cid])
            # A clipped delta is scaled first, as screening's clip does: the same roundings.
            scaled, alpha = flat if factor == 1.0 else flat * factor, server_lr * float(weights[cid])
            if acc is None:  # theta + eta w_1 delta_1 in one pass, no copy of theta first
                acc = torch.add(theta, scaled, alpha=alpha)
            else:
                acc.add_(scaled, alpha=alpha)
            del delta, flat, scaled  # before the next one is loaded
    assert acc is not None  # _check_weights refused an empty round
    return views(acc, layout)


def _combine(block: torch.Tensor, settings: AggregationSettings) -> torch.Tensor:
    """The coordinate-wise rule over dim 0 of a (K, n) block (the same ops as fgrpo_core/robust.py)."""
    if settings.strategy == "median":
        return torch.quantile(block, 0.5, dim=0)
    k = block.shape[0]
    cut = trimmed_count(k, settings.trim_fraction)
    return torch.sort(block, dim=0).values[cut : k - cut].mean(dim=0)


def coordinate_wise(
    global_adapter: Adapter,
    load: DeltaSource,
    factors: Mapping[str, float],
    settings: AggregationSettings,
    buffer_bytes: int = ROBUST_BUFFER_BYTES,
) -> Adapter:
    """theta + eta * rule(f_k delta_k) for 'median' or 'trimmed_mean', through a bounded buffer."""
    if settings.strategy not in ROBUST_STRATEGIES:
        raise AggregationError(f"strategy {settings.strategy!r} is not one of {ROBUST_STRATEGIES}")
    if not factors:
        raise AggregationError("no deltas to combine")
    ids = sorted(factors)
    layout = layout_of(global_adapter)
    block = max(1, buffer_bytes // (4 * len(ids)))
    with torch.no_grad():
        out = as_flat(global_adapter, layout).clone()
        for lo in range(0, layout.numel, block):
            hi = min(layout.numel, lo + block)
            values = torch.empty((len(ids), hi - lo), dtype=torch.float32)
            for row, cid in enumerate(ids):
                part = as_flat(_checked(load, cid, global_adapter, layout), layout)[lo:hi]
                factor = float(factors[cid])
                values[row] = part if factor == 1.0 else part * factor
            out[lo:hi].add_(_combine(values, settings), alpha=settings.server_lr)
    return views(out, layout)


def streamed_step(
    global_adapter: Adapter,
    load: DeltaSource,
    weights: Mapping[str, float],
    factors: Mapping[str, float],
    settings: AggregationSettings,
) -> Adapter:
    """The round's new global: the coordinate-wise rule of ``settings.strategy``, else the weighted sum."""
    if settings.strategy in ROBUST_STRATEGIES:
        return coordinate_wise(global_adapter, load, factors, settings)
    return weighted_sum(global_adapter, load, weights, factors, settings.server_lr, settings.lora_aggregation)
