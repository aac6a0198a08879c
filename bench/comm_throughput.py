"""Coordinator throughput at one adapter's size: aggregate_deltas per K, and each per-delta stage.

Throughput is bytes of float32 client deltas read per second (K x the delta's float32 size for
the aggregation), from the median of ``repetitions`` timings. Implementations are timed
interleaved (A B C, A B C, ...) in one process, so a slow spell of a shared machine hits them
alike. ``float64_loop`` is aggregate_deltas as it was before float32 accumulation (kept here
verbatim as the baseline); ``float64_inplace`` is the fastest float64 variant found, kept to
show what exact float64 accumulation would cost.
"""

from __future__ import annotations

import gc
import hashlib
import statistics
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch

from bench.comm_layouts import ENCODING_NAMES, AdapterLayout, synthetic_delta
from fgrpo_core.aggregation import accumulation_error_factor, aggregate_deltas
from fgrpo_core.deltas import check_layout, decode, delta_norm, encode, validate_delta
from fgrpo_core.types import Adapter

SERVER_LR = 1.0


def float64_loop(
    global_adapter: Adapter, deltas: Mapping[str, Adapter], weights: Mapping[str, float], server_lr: float
) -> Adapter:
    """aggregate_deltas before this benchmark (layout checks + float64 accumulation per client)."""
    client_ids = sorted(deltas)
    for cid in client_ids:
        check_layout(deltas[cid], global_adapter, what=f"delta of client {cid!r}")
    new_adapter: Adapter = {}
    for key in sorted(global_adapter):
        weighted_sum = torch.zeros(global_adapter[key].shape, dtype=torch.float64)
        for cid in client_ids:
            weighted_sum += weights[cid] * deltas[cid][key].detach().double()
        new_adapter[key] = (global_adapter[key].detach().double() + server_lr * weighted_sum).to(
            torch.float32
        )
    return new_adapter


def float64_inplace(
    global_adapter: Adapter, deltas: Mapping[str, Adapter], weights: Mapping[str, float], server_lr: float
) -> Adapter:
    """Float64 accumulator with in-place mixed-dtype multiply-adds: no temporary per client."""
    client_ids = sorted(deltas)
    for cid in client_ids:
        check_layout(deltas[cid], global_adapter, what=f"delta of client {cid!r}")
    new_adapter: Adapter = {}
    for key in sorted(global_adapter):
        acc = global_adapter[key].double()
        for cid in client_ids:
            acc.add_(deltas[cid][key], alpha=server_lr * weights[cid])
        new_adapter[key] = acc.to(torch.float32)
    return new_adapter


def current(
    global_adapter: Adapter, deltas: Mapping[str, Adapter], weights: Mapping[str, float], server_lr: float
) -> Adapter:
    """fgrpo_core.aggregation.aggregate_deltas as it is now."""
    return aggregate_deltas(global_adapter, deltas, weights, server_lr, "separate")


Aggregator = Callable[[Adapter, Mapping[str, Adapter], Mapping[str, float], float], Adapter]
AGGREGATORS: dict[str, Aggregator] = {
    "float64_loop": float64_loop,
    "float64_inplace": float64_inplace,
    "aggregate_deltas": current,
}


def _bound(
    fn: Aggregator, global_adapter: Adapter, deltas: Mapping[str, Adapter], weights: Mapping[str, float]
) -> Callable[[], object]:
    return lambda: fn(global_adapter, deltas, weights, SERVER_LR)


def time_interleaved(calls: Mapping[str, Callable[[], object]], repetitions: int) -> dict[str, list[float]]:
    """Seconds per call, the calls taking turns; one untimed warm-up call each."""
    for call in calls.values():
        call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repetitions):
        for name, call in calls.items():
            gc.collect()
            started = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def _summary(seconds: list[float], nbytes: int) -> dict[str, float]:
    median = statistics.median(seconds)
    return {"median_ms": 1e3 * median, "min_ms": 1e3 * min(seconds), "gbps": nbytes / median / 1e9}


def _error_vs_float64(
    merged: Adapter, global_adapter: Adapter, deltas: Mapping[str, Adapter], weights: Mapping[str, float]
) -> dict[str, float]:
    """Max |merged - exact| and its largest ratio to the documented float32 bound (<= 1 expected)."""
    ids = sorted(deltas)
    factor = accumulation_error_factor(len(ids))
    w = np.array([weights[c] for c in ids], dtype=np.float64)
    max_error, max_ratio = 0.0, 0.0
    for key in sorted(global_adapter):
        stack = np.stack([deltas[c][key].double().numpy() for c in ids])
        theta = global_adapter[key].double().numpy()
        exact = theta + SERVER_LR * np.average(stack, axis=0, weights=w)
        error = np.abs(merged[key].double().numpy() - exact)
        bound = factor * (np.abs(theta) + SERVER_LR * np.tensordot(w, np.abs(stack), axes=1))
        max_error = max(max_error, float(error.max()))
        max_ratio = max(max_ratio, float((error / np.maximum(bound, np.finfo(np.float64).tiny)).max()))
    return {"max_abs_error_vs_float64": max_error, "max_error_over_bound": max_ratio}


def aggregation_throughput(
    layout: AdapterLayout, clients: list[int], repetitions: int, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per K: median ms and GB/s of each implementation, and the float32 error."""
    global_adapter = synthetic_delta(layout, seed=seed, std=0.02)
    delta_bytes = 4 * layout.params
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for k in clients:
        deltas = {f"owner-{i:02d}": synthetic_delta(layout, seed=seed + 1 + i) for i in range(k)}
        raw = rng.uniform(0.5, 1.5, size=k)
        weights = {cid: float(w) for cid, w in zip(sorted(deltas), raw / raw.sum(), strict=True)}
        calls = {name: _bound(fn, global_adapter, deltas, weights) for name, fn in AGGREGATORS.items()}
        seconds = time_interleaved(calls, repetitions)
        nbytes = k * delta_bytes
        row: dict[str, Any] = {"clients": k, "bytes_read": nbytes}
        row.update({name: _summary(s, nbytes) for name, s in seconds.items()})
        row["speedup_vs_float64_loop"] = statistics.median(seconds["float64_loop"]) / statistics.median(
            seconds["aggregate_deltas"]
        )
        merged = current(global_adapter, deltas, weights, SERVER_LR)
        row.update(_error_vs_float64(merged, global_adapter, deltas, weights))
        rows.append(row)
        del deltas, calls
    return rows


def stage_throughput(layout: AdapterLayout, repetitions: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per-delta coordinator stages (and the client's encode), GB/s of float32 delta bytes.

    sha256 and decode read the encoded bytes, so their ``encoded_gbps`` is also given.
    """
    reference = synthetic_delta(layout, seed=seed, std=0.02)
    delta = synthetic_delta(layout, seed=seed + 1)
    nbytes = 4 * layout.params
    payloads: dict[str, bytes] = {enc: encode(delta, enc) for enc in ENCODING_NAMES}
    decoded = decode(payloads["float32"])[0]
    calls: dict[str, Callable[[], object]] = {
        "validate_delta": lambda: validate_delta(decoded, reference),
        "delta_norm": lambda: delta_norm(decoded),
    }
    for enc in ENCODING_NAMES:
        calls[f"sha256_{enc}"] = partial(hashlib.sha256, payloads[enc])
        calls[f"decode_{enc}"] = partial(decode, payloads[enc])
        calls[f"encode_{enc}"] = partial(encode, delta, enc)
    seconds = time_interleaved(calls, repetitions)
    out: dict[str, dict[str, float]] = {}
    for name, s in seconds.items():
        out[name] = _summary(s, nbytes)
        if name.startswith(("sha256_", "decode_")):
            payload = payloads[name.rsplit("_", 1)[-1]]
            out[name]["encoded_gbps"] = len(payload) / statistics.median(s) / 1e9
    return out
