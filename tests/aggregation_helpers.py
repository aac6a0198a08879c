"""Shared builders of the aggregation tests: adapters, client stats, SPEC §2's numpy reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hypothesis import settings
from hypothesis import strategies as st

from fgrpo_core.config import AggregationSettings
from fgrpo_core.types import Adapter, ClientStats, ServerState

PREFIX = "base_model.model.model.layers.{layer}.self_attn.{module}.lora_{ab}.weight"
Q_A = PREFIX.format(layer=0, module="q_proj", ab="A")
Q_B = PREFIX.format(layer=0, module="q_proj", ab="B")
FAST = settings(max_examples=40, deadline=None)


def make_adapter(seed: int, rank: int = 4, hidden: int = 16, layers: int = 1) -> Adapter:
    generator = torch.Generator().manual_seed(seed)
    adapter: Adapter = {}
    for layer in range(layers):
        for module in ("q_proj", "v_proj"):
            adapter[PREFIX.format(layer=layer, module=module, ab="A")] = torch.randn(
                rank, hidden, generator=generator
            )
            adapter[PREFIX.format(layer=layer, module=module, ab="B")] = torch.randn(
                hidden, rank, generator=generator
            )
    return adapter


def make_stats(client_id: str, **overrides: Any) -> ClientStats:
    values: dict[str, Any] = {
        "client_id": client_id,
        "round": 0,
        "n_k": 32,
        "r_pre": 0.4,
        "r_post": 0.5,
        "sigma": 0.3,
        "sigma_diff": 0.2,
        "m": 16,
        "reward_lo": 0.0,
        "reward_hi": 1.0,
    }
    values.update(overrides)
    return ClientStats(**values)


def reference_fgrpo(
    stats: list[ClientStats], cfg: AggregationSettings, state: ServerState
) -> tuple[np.ndarray, np.ndarray]:
    """Straight numpy transcription of SPEC §2: (gains, weights)."""
    n = np.array([s.n_k for s in stats], dtype=float)
    r_pre = np.array([s.r_pre for s in stats])
    r_post = np.array([s.r_post for s in stats])
    if cfg.gain_scale == "stderr":
        observed = np.array([s.sigma_diff / np.sqrt(s.m) for s in stats])
    else:
        observed = np.array([s.sigma for s in stats])
    known = [s.client_id in state.clients for s in stats]
    b = np.array(
        [state.clients[s.client_id].baseline if k else s.r_pre for s, k in zip(stats, known, strict=True)]
    )
    floor = cfg.scale_floor_frac * np.array([s.reward_hi - s.reward_lo for s in stats])
    # first_informative: a history scale at or below the floor is no measurement yet
    measured = [
        k and (cfg.scale_start == "first_round" or state.clients[s.client_id].scale > f)
        for s, k, f in zip(stats, known, floor, strict=True)
    ]
    s_prev = np.array(
        [
            state.clients[s.client_id].scale if k else o
            for s, k, o in zip(stats, measured, observed, strict=True)
        ]
    )
    ref = r_pre if cfg.gain_reference == "round_start" else b
    g = (r_post - ref) / np.maximum(s_prev, floor)
    g = np.sign(g) * np.maximum(0.0, np.abs(g) - cfg.gain_deadzone)
    u = n**cfg.lam * np.exp(np.clip(g, -cfg.gain_clip, cfg.gain_clip) / cfg.tau)
    return g, (1 - cfg.mu) * u / u.sum() + cfg.mu / len(stats)


@st.composite
def client_stats(draw: st.DrawFn, client_id: str) -> ClientStats:
    lo = draw(st.floats(-2.0, 2.0))
    width = draw(st.floats(0.5, 10.0))
    return make_stats(
        client_id,
        n_k=draw(st.integers(1, 200)),
        r_pre=lo + width * draw(st.floats(0.0, 1.0)),
        r_post=lo + width * draw(st.floats(0.0, 1.0)),
        sigma=width * draw(st.floats(0.0, 0.5)),
        sigma_diff=width * draw(st.floats(0.0, 1.0)),
        m=draw(st.integers(1, 64)),
        reward_lo=lo,
        reward_hi=lo + width,
    )


@st.composite
def rounds(draw: st.DrawFn, min_clients: int = 2) -> list[ClientStats]:
    k = draw(st.integers(min_clients, 5))
    return [draw(client_stats(f"c{i}")) for i in range(k)]
