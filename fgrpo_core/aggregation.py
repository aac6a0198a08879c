"""Aggregation: client weights (fedavg, reward, fgrpo), the weighted delta sum, norm screening.

The coordinate-wise rules (median, trimmed_mean) and ``apply_round`` are in robust.py. The
coordinator's round streams its deltas instead (streaming.py: the same sums, one delta in memory);
``aggregate_deltas`` and robust.py are the per-tensor definitions it is tested against.

Read next to SPEC §2; a client's gain and personal statistics are in gains.py. The FGRPO idea
(weight clients by their relative performance gain against a personalised historical baseline)
is from "FGRPO: Federated GRPO with Adaptive Aggregation on Non-IID Data" (arXiv 2606.03094);
the exact formulas here are this project's design.

Everything is a pure function: the server state goes in and a new one comes out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch

from fgrpo_core.config import AggregationSettings
from fgrpo_core.deltas import check_layout
from fgrpo_core.errors import AggregationError, DeltaValidationError
from fgrpo_core.gains import client_gain, updated_history
from fgrpo_core.types import Adapter, ClientStats, ClientWeight, ServerState

_SUM_TOLERANCE = 1e-9


def accumulation_error_factor(clients: int) -> float:
    """Relative float32 rounding budget of ``aggregate_deltas`` with K clients: (3K + 2) * 2**-24.

    Per client, the weight ``eta * w_k``, its product with the delta and the sum round once each;
    2 more for slack. Bound of an element: this times ``|theta| + eta * sum_k w_k |delta_k|``.
    """
    return (3 * clients + 2) * 2.0**-24


# --- weighting rules: one function each, dispatched by a plain dict --------------------------


def fedavg_weights(
    stats: Sequence[ClientStats], gains: np.ndarray, settings: AggregationSettings
) -> np.ndarray:
    """w_k = n_k / sum n."""
    return enrolled_shares(stats)


def enrolled_shares(stats: Sequence[ClientStats]) -> np.ndarray:
    """n_k / sum n: n_k is the coordinator's enrolment figure (a manifest may only claim less)."""
    n = np.array([s.n_k for s in stats], dtype=np.float64)
    return n / n.sum()


def reward_weights(
    stats: Sequence[ClientStats], gains: np.ndarray, settings: AggregationSettings
) -> np.ndarray:
    """w_k ~ n_k * (r_post_k - min_r), min_r = the lowest reward_lo (raw scales: the naive rule).

    Below min_r counts as 0; all 0: fedavg."""
    min_r = min(s.reward_lo for s in stats)
    n = np.array([s.n_k for s in stats], dtype=np.float64)
    excess = np.array([max(0.0, s.r_post - min_r) for s in stats], dtype=np.float64)
    products = n * excess
    if products.sum() <= 0.0:
        return fedavg_weights(stats, gains, settings)
    return products / products.sum()


def fgrpo_weights(
    stats: Sequence[ClientStats], gains: np.ndarray, settings: AggregationSettings
) -> np.ndarray:
    """u_k = n_k**lam * exp(clip(g_k, -gain_clip, gain_clip) / tau); w = (1-mu) u/sum u + mu/K.

    Variants gain_n 'informative' and negative_gain 'exclude': docs/algorithm.md."""
    n = np.array([s.n_k for s in stats], dtype=np.float64)
    if settings.gain_n == "informative":
        n = n * np.array([1.0 - s.all_equal_group_frac for s in stats])
    keep = gains >= 0 if settings.negative_gain == "exclude" and (gains >= 0).any() else gains == gains
    clipped = np.clip(gains, -settings.gain_clip, settings.gain_clip)
    with np.errstate(divide="ignore"):
        log_u = np.where(keep & (n > 0), settings.lam * np.log(n) + clipped / settings.tau, -np.inf)
    if not np.isfinite(log_u).any():
        log_u = np.where(keep, 0.0, -np.inf)  # nothing informative among the kept: equal shares
    u = np.exp(log_u - log_u.max())  # subtract the max: no overflow, same ratios
    return (1.0 - settings.mu) * u / u.sum() + settings.mu * keep / keep.sum()


def uniform_weights(
    stats: Sequence[ClientStats], gains: np.ndarray, settings: AggregationSettings
) -> np.ndarray:
    """1/K: the logged weights of a coordinate-wise rule (robust.py), which weights no client."""
    return np.full(len(stats), 1.0 / len(stats), dtype=np.float64)


WeightRule = Callable[[Sequence[ClientStats], np.ndarray, AggregationSettings], np.ndarray]
STRATEGIES: dict[str, WeightRule] = {
    "fedavg": fedavg_weights,
    "reward": reward_weights,
    "fgrpo": fgrpo_weights,
    "trimmed_mean": uniform_weights,
    "median": uniform_weights,
}


def client_caps(stats: Sequence[ClientStats], settings: AggregationSettings) -> np.ndarray:
    """Each client's most weight: max(weight_cap, its FedAvg share n_k / sum n) (SPEC §5).

    The share is trusted, so FedAvg is never capped; the cap bounds only what a reported gain or
    reward adds. The caps sum to at least 1 at any K: a round of one or two deltas is weighted.
    Under fgrpo no cap is below the floor mu/K every client gets (a cap below 1/K could be).
    """
    floor = settings.mu / len(stats) if settings.strategy == "fgrpo" else 0.0
    return np.maximum(max(settings.weight_cap, floor), enrolled_shares(stats))


def cap_weights(weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """No weight above its cap: the excess goes to the uncapped clients in proportion to theirs.

    Redistribution only adds weight to others, so a floor such as fgrpo's mu/K is kept.
    """
    k = len(weights)
    limits = caps.astype(np.float64, copy=False)
    if float(limits.sum()) < 1.0 - _SUM_TOLERANCE:
        raise AggregationError(
            f"weight caps {limits.tolist()} sum to less than 1: the weights cannot sum to 1; raise "
            f"aggregation.weight_cap to at least {1.0 / k:.4f} or wait for more clients"
        )
    capped_weights = weights.astype(np.float64, copy=True)
    capped = np.zeros(k, dtype=bool)
    for _ in range(k):  # each pass caps at least one more client
        over = capped_weights > limits + _SUM_TOLERANCE
        if not over.any():
            break
        capped |= over
        excess = float((capped_weights[over] - limits[over]).sum())
        capped_weights[over] = limits[over]
        free = ~capped
        if not free.any():
            break
        free_total = float(capped_weights[free].sum())
        share = (
            capped_weights[free] / free_total
            if free_total > 0
            else np.full(int(free.sum()), 1.0 / free.sum())
        )
        capped_weights[free] += excess * share
    return capped_weights


def _check_round(stats: Sequence[ClientStats]) -> None:
    if not stats:
        raise AggregationError("no client stats for this round: nothing to weight")
    ids = [s.client_id for s in stats]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise AggregationError(f"duplicate client ids in one round: {duplicates}")
    for s in stats:
        reported = (s.r_pre, s.r_post, s.sigma, s.sigma_diff, s.reward_lo, s.reward_hi)
        if not all(math.isfinite(v) for v in reported):
            raise AggregationError(
                f"client {s.client_id!r} reported non-finite statistics {reported}: leave it out of the round"
            )


def compute_weights(
    stats: Sequence[ClientStats], state: ServerState, settings: AggregationSettings
) -> tuple[list[ClientWeight], ServerState]:
    """One ClientWeight row per client (input order) and the new state (``round`` unchanged).

    Every strategy computes (and logs) the FGRPO gain and statistics; absent clients keep theirs.
    """
    _check_round(stats)
    # None marks a client's first round.
    histories = [state.clients.get(s.client_id) for s in stats]
    gains = [client_gain(s, h, settings) for s, h in zip(stats, histories, strict=True)]
    gain_values = np.array([g.gain for g in gains], dtype=np.float64)

    weights = STRATEGIES[settings.strategy](stats, gain_values, settings)
    weights = cap_weights(weights, client_caps(stats, settings))
    total = float(weights.sum())
    if abs(total - 1.0) > _SUM_TOLERANCE or not np.isfinite(weights).all():
        raise AggregationError(f"internal: weights {weights.tolist()} sum to {total}, not 1")

    new_clients = {cid: h.model_copy() for cid, h in state.clients.items()}
    for s, h in zip(stats, histories, strict=True):
        new_clients[s.client_id] = updated_history(s, h, settings)
    new_state = state.model_copy(update={"clients": new_clients})

    rows = [
        ClientWeight(
            client_id=s.client_id,
            n_k=s.n_k,
            r_pre=s.r_pre,
            r_post=s.r_post,
            sigma_diff=s.sigma_diff,
            baseline=g.baseline,
            scale=g.scale,
            gain=g.gain,
            weight=float(w),
        )
        for s, g, w in zip(stats, gains, weights, strict=True)
    ]
    return rows, new_state


# --- theta_{t+1} = theta_t + eta * sum_k w_k delta_k -----------------------------------------


def aggregate_deltas(
    global_adapter: Adapter,
    deltas: Mapping[str, Adapter],
    weights: Mapping[str, float],
    server_lr: float,
    lora_aggregation: Literal["separate", "freeze_a"],
) -> Adapter:
    """theta + eta * sum_k w_k delta_k in float32, clients added in sorted id order (deterministic).

    Keys and shapes are checked first (nothing broadcasts). Per key: ``theta + eta*w_1*delta_1``,
    then one fused in-place ``add_(delta, alpha=eta*w)`` per client; each element is within
    ``accumulation_error_factor(K) * (|theta| + eta * sum_k w_k |delta_k|)`` of the exact value.

    ``separate`` averages A and B independently (FlowerTune, FedIT): the average of B_k·A_k is
    not the product of the averages. ``freeze_a`` (FFA-LoRA) requires every ``lora_A`` delta to
    be zero, so A stays shared and averaging B averages the products exactly.
    """
    if set(deltas) != set(weights):
        raise AggregationError(
            f"client sets differ: deltas only {sorted(set(deltas) - set(weights))}, "
            f"weights only {sorted(set(weights) - set(deltas))}; weight exactly the kept deltas"
        )
    if not deltas:
        raise AggregationError("no deltas to aggregate")
    client_ids = sorted(deltas)
    weight_values = [float(weights[cid]) for cid in client_ids]
    if not all(math.isfinite(w) and w >= 0.0 for w in weight_values):
        raise AggregationError(
            f"weights must be finite and >= 0, got {dict(zip(client_ids, weight_values, strict=True))}"
        )
    if abs(sum(weight_values) - 1.0) > 1e-6:
        raise AggregationError(
            f"weights sum to {sum(weight_values)}, not 1: recompute them over the kept clients"
        )
    for cid in client_ids:
        try:
            check_layout(deltas[cid], global_adapter, what=f"delta of client {cid!r}")
        except DeltaValidationError as err:
            raise AggregationError(str(err)) from err
    if lora_aggregation == "freeze_a":
        for cid in client_ids:
            for key in sorted(k for k in global_adapter if "lora_A" in k):
                if bool(deltas[cid][key].ne(0).any()):
                    raise AggregationError(
                        f"freeze_a: client {cid!r} changed {key!r}; train with lora.freeze_a: true "
                        "or use lora_aggregation 'separate'"
                    )

    alphas = [server_lr * w for w in weight_values]
    first, rest = client_ids[0], list(zip(client_ids[1:], alphas[1:], strict=True))
    new_adapter: Adapter = {}
    with torch.no_grad():
        for key in sorted(global_adapter):
            merged = torch.add(global_adapter[key].to(torch.float32), deltas[first][key], alpha=alphas[0])
            for cid, alpha in rest:
                merged.add_(deltas[cid][key], alpha=alpha)
            new_adapter[key] = merged.to(torch.float32)  # a float64 delta would promote
    return new_adapter
