"""The streamed aggregation against the machine's copy bandwidth, and the coordinator's memory in K.

Bandwidth: ``torch`` copy of a buffer of K x the delta's float32 size (what moving the round's
deltas once costs), timed interleaved with the per-tensor ``aggregate_deltas`` (before) and the
flat ``weighted_sum`` (now, fgrpo_core/streaming.py) on deltas laid out as ``decode`` returns
them. GB/s counts the float32 delta bytes read, as in bench/comm_throughput.py.

Memory: the decoded delta bytes alive at once, counted (each decoded delta is tracked until it
is freed), plus the accumulator. Before: the aggregate task decoded every delta into a dict,
then summed. Now: ``weighted_sum`` loads and decodes each when it needs it.
"""

from __future__ import annotations

import statistics
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from bench.comm_layouts import AdapterLayout, synthetic_delta
from fgrpo_core.aggregation import aggregate_deltas
from fgrpo_core.deltas import decode, encode
from fgrpo_core.flat import flat_copy
from fgrpo_core.streaming import weighted_sum
from fgrpo_core.types import Adapter

SERVER_LR = 1.0
Timer = Callable[[Mapping[str, Callable[[], object]], int], dict[str, list[float]]]


def _weights(k: int, seed: int) -> dict[str, float]:
    raw = np.random.default_rng(seed).uniform(0.5, 1.5, size=k)
    return {f"owner-{i:02d}": float(w) for i, w in enumerate(raw / raw.sum())}


def _bandwidth_row(
    theta: Adapter, layout: AdapterLayout, k: int, repetitions: int, timer: Timer, seed: int
) -> dict[str, Any]:
    weights = _weights(k, seed + k)
    deltas = {cid: flat_copy(synthetic_delta(layout, seed=seed + 1 + i)) for i, cid in enumerate(weights)}
    ones = dict.fromkeys(weights, 1.0)
    nbytes = 4 * layout.params * k
    source, target = torch.randn(nbytes // 4), torch.empty(nbytes // 4)
    calls: dict[str, Callable[[], object]] = {
        "copy": lambda: target.copy_(source),
        "per_tensor": lambda: aggregate_deltas(theta, deltas, weights, SERVER_LR, "separate"),
        "streamed": lambda: weighted_sum(theta, deltas.__getitem__, weights, ones, SERVER_LR),
    }
    seconds = timer(calls, repetitions)
    gbps = {name: nbytes / statistics.median(s) / 1e9 for name, s in seconds.items()}
    streamed = weighted_sum(theta, deltas.__getitem__, weights, ones, SERVER_LR)
    reference = aggregate_deltas(theta, deltas, weights, SERVER_LR, "separate")
    return {
        "clients": k,
        "bytes_read": nbytes,
        "gbps": gbps,
        "streamed_over_copy": gbps["streamed"] / gbps["copy"],
        "per_tensor_over_copy": gbps["per_tensor"] / gbps["copy"],
        "streamed_equals_per_tensor": all(torch.equal(streamed[x], reference[x]) for x in reference),
    }


def bandwidth(
    layout: AdapterLayout, clients: list[int], repetitions: int, timer: Timer, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per K: copy, per-tensor and streamed GB/s, and streamed / copy."""
    theta = flat_copy(synthetic_delta(layout, seed=seed, std=0.02))
    return [_bandwidth_row(theta, layout, k, repetitions, timer, seed) for k in clients]


class _LiveBytes:
    """Decoded delta bytes alive now and at most, counted as each is freed."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    def decoded(self, data: bytes) -> Adapter:
        adapter, _ = decode(data)
        size = sum(t.numel() * t.element_size() for t in adapter.values())
        self.now += size
        self.peak = max(self.peak, self.now)
        weakref.finalize(next(iter(adapter.values())), self._freed, size)
        return adapter

    def _freed(self, size: int) -> None:
        self.now -= size


def _memory_row(theta: Adapter, layout: AdapterLayout, k: int, seed: int) -> dict[str, Any]:
    weights = _weights(k, seed + k)
    # The store's bytes (not the coordinator's memory): one float32 payload per owner.
    payload = {cid: encode(synthetic_delta(layout, seed=seed + 1 + i)) for i, cid in enumerate(weights)}
    before = _LiveBytes()
    held = {cid: before.decoded(payload[cid]) for cid in sorted(weights)}
    aggregate_deltas(theta, held, weights, SERVER_LR, "separate")
    held.clear()
    now = _LiveBytes()
    weighted_sum(theta, lambda c: now.decoded(payload[c]), weights, dict.fromkeys(weights, 1.0), SERVER_LR)
    adapter_bytes = 4 * layout.params  # the accumulator (the new global), in both
    return {
        "clients": k,
        "before_peak_delta_bytes": before.peak,
        "now_peak_delta_bytes": now.peak,
        "before_total_bytes": before.peak + adapter_bytes,
        "now_total_bytes": now.peak + adapter_bytes,
    }


def memory(layout: AdapterLayout, clients: list[int], seed: int = 0) -> list[dict[str, Any]]:
    """One row per K: peak decoded bytes held by the coordinator before (all held) and now (streamed)."""
    theta = flat_copy(synthetic_delta(layout, seed=seed, std=0.02))
    return [_memory_row(theta, layout, k, seed) for k in clients]
