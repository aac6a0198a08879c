"""One federated round as plain functions: a client's update and the coordinator's aggregation.

The coordinator's side (``aggregate_round``, ``aggregate_streamed``) is in coordinator.py and
re-exported here, next to the client's.

The in-process runner and the Prefect tasks call exactly these, so the bare loop and the
orchestrated pipeline compute the same thing. Nothing here touches a store or a tracker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from fgrpo_core import rewards
from fgrpo_core.client_rewards import client_reward, family_dispatch
from fgrpo_core.config import ClientSpec, ExperimentConfig
from fgrpo_core.coordinator import ClientUpdate, RoundOutcome, aggregate_round, aggregate_streamed
from fgrpo_core.deltas import apply_delta, subtract
from fgrpo_core.errors import ConfigError
from fgrpo_core.evaluate import evaluate
from fgrpo_core.families import Example, get_family
from fgrpo_core.models import ModelBundle, set_adapter
from fgrpo_core.partition import ClientData, client_data, eval_sets
from fgrpo_core.trainer import train_client
from fgrpo_core.types import Adapter, ClientStats, FamilyScore, GlobalEval

__all__ = [
    "ClientUpdate",
    "RoundOutcome",
    "aggregate_round",
    "aggregate_streamed",
    "client_update",
    "evaluate_families",
    "probe_stats",
    "server_probe",
]

Progress = Callable[[int, int, float], None]


def _spec(cfg: ExperimentConfig, client_id: str) -> ClientSpec:
    for spec in cfg.clients:
        if spec.id == client_id:
            return spec
    raise ConfigError(f"unknown client {client_id!r}; clients are {[c.id for c in cfg.clients]}")


def _families_of(data: ClientData) -> list[str]:
    return sorted({e.family for e in [*data.train, *data.val]})


# --- the client's side (SPEC §1, client steps 1-5 without the upload) ---------------------------


def client_update(
    bundle: ModelBundle,
    global_adapter: Adapter,
    cfg: ExperimentConfig,
    client_id: str,
    round_idx: int,
    output_dir: str | Path,
    progress: Progress | None = None,
) -> ClientUpdate:
    """Train one client for one round from the global adapter; return delta = local - global."""
    spec = _spec(cfg, client_id)
    data = client_data(cfg, client_id)
    reward_fn, reward_range = client_reward(spec, _families_of(data))
    # Distinct seeds per client and round, stable across processes (no Python hash()).
    seed = cfg.seed * 1_000_003 + round_idx * 1_009 + [c.id for c in cfg.clients].index(client_id)
    result = train_client(
        bundle,
        global_adapter,
        data,
        reward_fn,
        reward_range,
        cfg.grpo,
        cfg.evaluation,
        round_idx,
        seed,
        output_dir,
        progress,
    )
    return ClientUpdate(delta=subtract(result.adapter, global_adapter), stats=result.stats)


# --- evaluation on the coordinator -------------------------------------------------------------


def evaluate_families(
    bundle: ModelBundle, adapter: Adapter, sets: Mapping[str, Sequence[Example]], cfg: ExperimentConfig
) -> GlobalEval:
    """Greedy accuracy and mean reward (the family's own reward) of an adapter, per family."""
    set_adapter(bundle.model, adapter)
    scores: dict[str, FamilyScore] = {}
    for family in sorted(sets):
        fam = get_family(family)
        result = evaluate(
            bundle, sets[family], rewards.get_reward(fam.reward_name), cfg.evaluation, fam.reward_range
        )
        scores[family] = FamilyScore(accuracy=result.accuracy, mean_reward=result.mean_reward, n=result.n)
    return GlobalEval(families=scores)


def probe_stats(
    bundle: ModelBundle,
    global_adapter: Adapter,
    update: ClientUpdate,
    families: Sequence[str],
    probe: Mapping[str, Sequence[Example]],
    cfg: ExperimentConfig,
) -> ClientStats:
    """Replace a client's self-reported r_pre, r_post and spreads by the coordinator's own measure.

    The probe prompts are public and scored with each family's true reward, so a client whose own
    (possibly hackable) reward rises while the task does not improve shows no gain here.
    """
    examples = [e for f in sorted(families) for e in probe[f]]
    ranges = [get_family(f).reward_range for f in families]
    lo_hi = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    fn = family_dispatch(sorted(families))

    def run(adapter: Adapter) -> np.ndarray:
        set_adapter(bundle.model, adapter)
        res = evaluate(bundle, examples, fn, cfg.evaluation, lo_hi)
        return np.asarray(res.rewards, dtype=np.float64)

    pre = run(global_adapter)
    post = run(apply_delta(global_adapter, update.delta))
    return update.stats.model_copy(
        update={
            "r_pre": float(pre.mean()),
            "r_post": float(post.mean()),
            "sigma": float(pre.std()),
            "sigma_diff": float((post - pre).std()),
            "m": len(examples),
            "reward_lo": lo_hi[0],
            "reward_hi": lo_hi[1],
        }
    )


def server_probe(
    bundle: ModelBundle, global_adapter: Adapter, cfg: ExperimentConfig
) -> Callable[[str, ClientUpdate], ClientStats] | None:
    """The coordinator's probe of each update for ``aggregate_round`` (None unless server_probe)."""
    if cfg.aggregation.gain_source != "server_probe":
        return None
    probes = eval_sets(cfg).probe
    families = {c.id: sorted({e.family for e in client_data(cfg, c.id).val}) for c in cfg.clients}

    def probe(cid: str, update: ClientUpdate) -> ClientStats:
        return probe_stats(bundle, global_adapter, update, families[cid], probes, cfg)

    return probe
