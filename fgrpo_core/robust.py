"""Robust baselines: coordinate-wise median and trimmed mean of a round's deltas (issue 11).

What a practitioner expects next to FGRPO when owners may be faulty: every coordinate of the
combined delta is the median (or the mean after dropping the ``floor(trim_fraction * K)``
largest and smallest values) of that coordinate over the K clients. Neither uses n_k or any
reported number, so no claim in a manifest can move them; one outlier moves a coordinate at
most to the next honest value. ``apply_round`` picks one of them or the weighted sum. Pure functions over named tensors, like aggregation.py: keys
and shapes are checked before any arithmetic and nothing broadcasts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from fgrpo_core.aggregation import aggregate_deltas
from fgrpo_core.config import AggregationSettings
from fgrpo_core.deltas import check_layout
from fgrpo_core.errors import AggregationError, DeltaValidationError
from fgrpo_core.types import Adapter

ROBUST_STRATEGIES = ("trimmed_mean", "median")


def trimmed_count(clients: int, trim_fraction: float) -> int:
    """How many values are dropped at EACH end of a coordinate: floor(trim_fraction * K)."""
    if not 0.0 <= trim_fraction < 0.5:
        raise AggregationError(
            f"trim_fraction {trim_fraction} must be in [0, 0.5): set aggregation.trim_fraction"
        )
    # The epsilon keeps e.g. 0.2 x 5 = 1 from flooring to 0 through float rounding.
    return math.floor(trim_fraction * clients + 1e-9)


def _stacked(reference: Adapter, deltas: Mapping[str, Adapter]) -> dict[str, torch.Tensor]:
    """key -> (K, *shape) float32 stack, clients in sorted id order; layouts checked first."""
    if not deltas:
        raise AggregationError("no deltas to combine")
    client_ids = sorted(deltas)
    for cid in client_ids:
        try:
            check_layout(deltas[cid], reference, what=f"delta of client {cid!r}")
        except DeltaValidationError as err:
            raise AggregationError(str(err)) from err
    return {
        key: torch.stack([deltas[cid][key].to(torch.float32) for cid in client_ids])
        for key in sorted(reference)
    }


def coordinate_median(reference: Adapter, deltas: Mapping[str, Adapter]) -> Adapter:
    """Per coordinate, the median over clients; with an even K the mean of the two middle values.

    (torch.median returns the lower middle value; numpy's median, the usual definition, averages.)
    """
    stacked = _stacked(reference, deltas)
    return {key: torch.quantile(values, 0.5, dim=0) for key, values in stacked.items()}


def trimmed_mean(reference: Adapter, deltas: Mapping[str, Adapter], trim_fraction: float) -> Adapter:
    """Per coordinate, the mean after dropping the floor(trim_fraction * K) lowest and highest values."""
    k = len(deltas)
    cut = trimmed_count(k, trim_fraction)
    stacked = _stacked(reference, deltas)
    out: Adapter = {}
    for key, values in stacked.items():
        ordered = torch.sort(values, dim=0).values
        out[key] = ordered[cut : k - cut].mean(dim=0)
    return out


def robust_step(
    global_adapter: Adapter, deltas: Mapping[str, Adapter], settings: AggregationSettings
) -> Adapter:
    """theta + eta * robust(deltas) for strategy 'median' or 'trimmed_mean', in float32."""
    if settings.strategy == "median":
        combined = coordinate_median(global_adapter, deltas)
    elif settings.strategy == "trimmed_mean":
        combined = trimmed_mean(global_adapter, deltas, settings.trim_fraction)
    else:
        raise AggregationError(f"strategy {settings.strategy!r} is not one of {ROBUST_STRATEGIES}")
    with torch.no_grad():
        return {
            key: torch.add(global_adapter[key].to(torch.float32), combined[key], alpha=settings.server_lr)
            for key in sorted(global_adapter)
        }


def apply_round(
    global_adapter: Adapter,
    deltas: Mapping[str, Adapter],
    weights: Mapping[str, float],
    settings: AggregationSettings,
) -> Adapter:
    """The round's new global: the coordinate-wise rule of ``settings.strategy``, else the weighted sum."""
    if settings.strategy in ROBUST_STRATEGIES:
        return robust_step(global_adapter, deltas, settings)
    return aggregate_deltas(global_adapter, deltas, weights, settings.server_lr, settings.lora_aggregation)
