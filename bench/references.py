"""One benchmark run: a strategy through the bare federated loop, or one of the two references.

- strategy: `fgrpo_core.runner.run_in_process`, the same code the Prefect tasks call.
- local: each owner trains alone from the shared initial adapter for the same rounds and steps,
  no aggregation; each owner's adapter is evaluated on every family and the table reports the
  mean over owners (what an owner gets by not federating). Each round also records, per owner,
  its own report (reward before and after, all-equal GRPO groups), its delta's norm and its
  adapter's evaluation: what the scenario preconditions (bench/preconditions.py) are read from.
- central: one trainer on the pooled prompts of all owners, each scored with its family's own
  reward (no owner-specific scale or hack), with the same total number of GRPO steps per round
  as the federation (owners x local_steps): an upper reference for what the data can teach.

Every run returns plain JSON-ready dicts: the global evaluation per family after each round.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fgrpo_core.client_rewards import client_reward
from fgrpo_core.config import ClientSpec, ExperimentConfig, parse_config
from fgrpo_core.deltas import apply_delta, delta_norm
from fgrpo_core.federation import client_update, evaluate_families
from fgrpo_core.models import get_adapter, load_bundle
from fgrpo_core.partition import ClientData, client_data, eval_sets
from fgrpo_core.runner import run_in_process
from fgrpo_core.trainer import train_client
from fgrpo_core.types import GlobalEval


def _evaluation(ev: GlobalEval) -> dict[str, Any]:
    return {
        "families": {
            f: {"accuracy": s.accuracy, "mean_reward": s.mean_reward} for f, s in ev.families.items()
        },
        "macro_accuracy": ev.macro_accuracy,
    }


def _mean_evaluation(evs: list[GlobalEval]) -> dict[str, Any]:
    families = sorted(evs[0].families)
    fam = {
        f: {
            "accuracy": sum(e.families[f].accuracy for e in evs) / len(evs),
            "mean_reward": sum(e.families[f].mean_reward for e in evs) / len(evs),
        }
        for f in families
    }
    return {"families": fam, "macro_accuracy": sum(v["accuracy"] for v in fam.values()) / len(fam)}


def run_strategy(raw: dict[str, Any], work: Path) -> dict[str, Any]:
    """The federated loop with the config's strategy; weights, gains and norms per round."""
    cfg = parse_config(raw)
    result = run_in_process(cfg, work)
    rounds = []
    for record in result.rounds:
        rows = [
            {
                k: getattr(r, k)
                for k in ("client_id", "r_pre", "r_post", "baseline", "scale", "gain", "weight", "delta_norm")
            }
            | {"accepted": r.accepted, "reported_r_post": r.reported_r_post}
            for r in record.rows
        ]
        rounds.append({"round": record.round, **_evaluation(record.evaluation), "rows": rows})
    return {"initial": _evaluation(result.initial_evaluation), "rounds": rounds}


def run_local(raw: dict[str, Any], work: Path) -> dict[str, Any]:
    """Every owner alone: its own adapter carried across rounds, never averaged."""
    cfg = parse_config(raw)
    bundle = load_bundle(cfg)
    initial_adapter = get_adapter(bundle.model)
    sets = eval_sets(cfg).eval
    adapters = {c.id: initial_adapter for c in cfg.clients}
    initial = evaluate_families(bundle, initial_adapter, sets, cfg)
    rounds = []
    for round_idx in range(1, cfg.federation.rounds + 1):
        evs, owners = [], []
        for spec in cfg.clients:
            update = client_update(bundle, adapters[spec.id], cfg, spec.id, round_idx, work)
            adapters[spec.id] = apply_delta(adapters[spec.id], update.delta)
            evs.append(evaluate_families(bundle, adapters[spec.id], sets, cfg))
            stats = update.stats
            owners.append(
                {
                    "client_id": spec.id,
                    "r_pre": stats.r_pre,
                    "r_post": stats.r_post,
                    "acc_pre": stats.acc_pre,
                    "acc_post": stats.acc_post,
                    "all_equal_group_frac": stats.all_equal_group_frac,
                    "delta_norm": delta_norm(update.delta),
                    **_evaluation(evs[-1]),
                }
            )
        rounds.append({"round": round_idx, **_mean_evaluation(evs), "rows": [], "owners": owners})
    return {"initial": _evaluation(initial), "rounds": rounds}


def _pooled(cfg: ExperimentConfig) -> ClientData:
    shares = [client_data(cfg, c.id) for c in cfg.clients]
    families = cfg.data.families
    return ClientData(
        client_id="central",
        train=[e for s in shares for e in s.train],
        val=[e for s in shares for e in s.val],
        mix={f: sum(s.mix.get(f, 0) for s in shares) for f in families},
    )


def run_central(raw: dict[str, Any], work: Path) -> dict[str, Any]:
    """Pooled prompts, family rewards, owners x local_steps GRPO steps per round."""
    cfg = parse_config(raw)
    bundle = load_bundle(cfg)
    adapter = get_adapter(bundle.model)
    sets = eval_sets(cfg).eval
    data = _pooled(cfg)
    families = sorted({e.family for e in data.train})
    reward_fn, reward_range = client_reward(ClientSpec(id="central", families=families), families)
    grpo = cfg.grpo.model_copy(update={"local_steps": cfg.grpo.local_steps * len(cfg.clients)})
    initial = evaluate_families(bundle, adapter, sets, cfg)
    rounds = []
    for round_idx in range(1, cfg.federation.rounds + 1):
        seed = cfg.seed * 1_000_003 + round_idx * 1_009
        result = train_client(
            bundle, adapter, data, reward_fn, reward_range, grpo, cfg.evaluation, round_idx, seed, work
        )
        adapter = result.adapter
        rounds.append(
            {"round": round_idx, **_evaluation(evaluate_families(bundle, adapter, sets, cfg)), "rows": []}
        )
    return {"initial": _evaluation(initial), "rounds": rounds}


RUNNERS = {"strategy": run_strategy, "local": run_local, "central": run_central}


def run_arm(kind: str, raw: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run one arm; the result carries its wall time."""
    started = time.perf_counter()
    result = RUNNERS[kind](raw, work)
    result["wall_time_s"] = time.perf_counter() - started
    return result
