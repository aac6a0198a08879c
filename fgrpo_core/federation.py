"""One federated round as plain functions: a client's update and the coordinator's aggregation.

The in-process runner and the Prefect tasks call exactly these, so the bare loop and the
orchestrated pipeline compute the same thing. Nothing here touches a store or a tracker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fgrpo_core import rewards, screening
from fgrpo_core.aggregation import compute_weights
from fgrpo_core.client_rewards import client_reward, family_dispatch
from fgrpo_core.config import ClientSpec, ExperimentConfig
from fgrpo_core.deltas import apply_delta, delta_norm, subtract
from fgrpo_core.errors import ConfigError, DeltaValidationError, QuorumError
from fgrpo_core.evaluate import evaluate
from fgrpo_core.families import Example, get_family
from fgrpo_core.models import ModelBundle, set_adapter
from fgrpo_core.partition import ClientData, client_data, eval_sets
from fgrpo_core.robust import apply_round
from fgrpo_core.screening import screen_norms
from fgrpo_core.trainer import train_client
from fgrpo_core.types import Adapter, ClientStats, FamilyScore, GlobalEval, RoundRow, ServerState
from fgrpo_core.update_checks import check_update

Progress = Callable[[int, int, float], None]


def _spec(cfg: ExperimentConfig, client_id: str) -> ClientSpec:
    for spec in cfg.clients:
        if spec.id == client_id:
            return spec
    raise ConfigError(f"unknown client {client_id!r}; clients are {[c.id for c in cfg.clients]}")


def _families_of(data: ClientData) -> list[str]:
    return sorted({e.family for e in [*data.train, *data.val]})


# --- the client's side (SPEC §1, client steps 1-5 without the upload) ---------------------------


@dataclass
class ClientUpdate:
    """What a client produces in a round: its delta (stays a tensor map) and its scalar stats."""

    delta: Adapter
    stats: ClientStats


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


# --- the coordinator's side (SPEC §1 coordinator steps 1-3, §5 validation) ----------------------


@dataclass
class RoundOutcome:
    """A committed round: the new global adapter, the round table and the new server state."""

    adapter: Adapter
    rows: list[RoundRow]
    state: ServerState
    accepted: list[str]
    failed: dict[str, str] = field(default_factory=dict)


def aggregate_round(
    global_adapter: Adapter,
    updates: Mapping[str, ClientUpdate],
    failed: Mapping[str, str],
    state: ServerState,
    cfg: ExperimentConfig,
    round_idx: int,
    delta_bytes: Mapping[str, int] | None = None,
    probe: Callable[[str, ClientUpdate], ClientStats] | None = None,
) -> RoundOutcome:
    """Validate, screen, weight and apply a round's deltas; raise QuorumError below min_clients.

    ``failed`` holds clients that never delivered (crash, timeout, bad manifest) with the reason;
    they are recorded, not averaged. ``probe`` (gain_source 'server_probe') recomputes a client's
    stats from its delta.
    """
    agg = cfg.aggregation
    # The coordinator's own enrolment figures (SPEC §5): a manifest's n_k is only a claim.
    enrolled = {c.id: c.n_train for c in cfg.clients}
    rejected: dict[str, str] = dict(failed)
    valid: dict[str, ClientUpdate] = {}
    for cid in sorted(updates):
        if cid not in enrolled:
            rejected[cid] = f"manifest: {cid!r} is not an enrolled client of this experiment"
            continue
        try:
            check_update(
                cid, updates[cid].stats, updates[cid].delta, global_adapter, round_idx, enrolled[cid]
            )
        except DeltaValidationError as err:
            rejected[cid] = f"{err.reason}: {err}"
            continue
        valid[cid] = updates[cid]

    # Hook (fgrpo_core/screening.py): bounds fixed before the round, so screening works at any K.
    bounds = screening.fixed_bounds(state.norm_history, delta_norm(global_adapter), agg)
    screen = (
        screen_norms(
            {c: u.delta for c, u in valid.items()}, agg.max_delta_norm_ratio, agg.norm_action, bounds
        )
        if valid
        else None
    )
    kept = dict(screen.kept) if screen else {}
    if screen:
        rejected.update(screen.rejected)
    if len(kept) < cfg.federation.min_clients:
        listed = "; ".join(f"{cid}: {rejected[cid]}" for cid in sorted(rejected)) or "none"
        raise QuorumError(
            f"round {round_idx} not committed: {len(kept)} valid delta(s) {sorted(kept)}, "
            f"federation.min_clients is {cfg.federation.min_clients}. Failed or rejected: {listed}. "
            "The previous global adapter stays; fix the listed clients (or lower "
            "federation.min_clients, or raise federation.round_timeout_s for late ones) and run again"
        )

    stats = []
    for cid in sorted(kept):
        update = ClientUpdate(delta=kept[cid], stats=valid[cid].stats)
        # Under server_probe nothing self-reported enters the weights: n_k is the enrolment figure.
        stats.append(
            probe(cid, update).model_copy(update={"n_k": enrolled[cid]})
            if probe is not None
            else update.stats
        )
    weight_rows, new_state = compute_weights(stats, state, agg)
    weights = {r.client_id: r.weight for r in weight_rows}
    new_adapter = apply_round(global_adapter, kept, weights, agg)  # weighted sum, or median/trimmed mean
    history = screening.next_norm_history(
        state.norm_history, (delta_norm(kept[c]) for c in sorted(kept)), agg.norm_history_rounds
    )
    new_state = new_state.model_copy(update={"round": round_idx, "norm_history": history})

    sizes = dict(delta_bytes or {})
    norms = screen.norms if screen else {}
    clipped = set(screen.clipped) if screen else set()
    rows = [
        RoundRow(
            **w.model_dump(),
            accepted=True,
            clipped=w.client_id in clipped,
            reason=screen.clip_reasons.get(w.client_id, "") if screen is not None else "",
            delta_norm=norms[w.client_id],
            delta_bytes=sizes.get(w.client_id, 0),
            reported_r_post=valid[w.client_id].stats.r_post,
        )
        for w in weight_rows
    ]
    for cid in sorted(rejected):
        reported = updates[cid].stats if cid in updates else None
        rows.append(
            RoundRow(
                client_id=cid,
                accepted=False,
                reason=rejected[cid],
                delta_norm=norms.get(cid, 0.0),
                delta_bytes=sizes.get(cid, 0),
                n_k=reported.n_k if reported else 0,
                r_pre=reported.r_pre if reported else 0.0,
                r_post=reported.r_post if reported else 0.0,
                reported_r_post=reported.r_post if reported else 0.0,
            )
        )
    rows.sort(key=lambda r: r.client_id)
    return RoundOutcome(
        adapter=new_adapter, rows=rows, state=new_state, accepted=sorted(kept), failed=rejected
    )
