"""Faults, bad input and dishonest clients (SPEC §3, §5): every round survives them and loses nothing.

Each case is a test that states the round's outcome, what is recorded, and that the bad client did
not take the round: its weight is 0, or within the bound documented in docs/faults.md, and the
global evaluation moves by at most EVAL_TOLERANCE against the honest reference. Most cases run on
the core (`aggregate_round`) with real deltas of three tiny clients trained once; crash, hang, S3
outage, quorum and a SIGKILLed coordinator go through the Prefect flows and the CLI.

What the tests/faults/ files share: round 1 of three honest tiny clients, trained once per session
(the `round1` fixture, made visible to that folder by tests/faults/conftest.py), and the references.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fgrpo_core.config import ExperimentConfig, parse_config
from fgrpo_core.deltas import encode
from fgrpo_core.families import get_family
from fgrpo_core.federation import (
    ClientUpdate,
    RoundOutcome,
    aggregate_round,
    client_update,
    evaluate_families,
    probe_stats,
)
from fgrpo_core.manifest import sha256_hex
from fgrpo_core.models import ModelBundle, get_adapter, load_bundle
from fgrpo_core.partition import EvalSets, client_data, eval_sets
from fgrpo_core.runner import transport
from fgrpo_core.types import Adapter, ClientStats, GlobalEval, RoundRow, ServerState
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
CLIENTS = ("owner-a", "owner-b", "owner-c")
# The most the global evaluation may lose to a bad client, against the honest reference: the mean
# over families of the mean reward rescaled to [0, 1] (SPEC §4 ranges). An unscreened x100 delta
# costs 0.20 here (test_scaled_delta_is_clipped_to_the_median_bound_or_rejected): the measure sees
# harm. docs/faults.md has every case's measured outcome.
EVAL_TOLERANCE = 0.02
# What gain_source 'server_probe' replaces in a client's report (fgrpo_core.federation.probe_stats).
PROBED_FIELDS = {"r_pre", "r_post", "sigma", "sigma_diff", "m", "reward_lo", "reward_hi"}


def normalised_reward(evaluation: GlobalEval) -> float:
    """Macro mean reward, each family's rescaled to [0, 1] by its reward range."""
    values = []
    for family, score in evaluation.families.items():
        lo, hi = get_family(family).reward_range
        values.append((score.mean_reward - lo) / (hi - lo))
    return float(np.mean(values))


def fgrpo_weight(
    own_gain: float, own_n: int, others: list[tuple[float, int]], cfg: ExperimentConfig
) -> float:
    """Reference: one client's FGRPO weight from the gains and sizes of the round (SPEC §2)."""
    agg = cfg.aggregation
    u = [n**agg.lam * math.exp(float(np.clip(g, -agg.gain_clip, agg.gain_clip)) / agg.tau) for g, n in others]
    own = own_n**agg.lam * math.exp(float(np.clip(own_gain, -agg.gain_clip, agg.gain_clip)) / agg.tau)
    k = 1 + len(others)
    return (1 - agg.mu) * own / (own + sum(u)) + agg.mu / k


def worst_case_weight(own_n: int, other_n: list[int], cfg: ExperimentConfig) -> float:
    """The documented bound (docs/faults.md): liar at +gain_clip, everyone else at -gain_clip, capped
    at max(weight_cap, the liar's FedAvg share)."""
    agg = cfg.aggregation
    others = sum((n / own_n) ** agg.lam * math.exp(-2 * agg.gain_clip / agg.tau) for n in other_n)
    bound = (1 - agg.mu) / (1 + others) + agg.mu / (1 + len(other_n))
    return min(max(agg.weight_cap, own_n / (own_n + sum(other_n))), bound)


# --- one round of three honest tiny clients, trained once ----------------------------------------


@dataclass
class Round1:
    """Round 1 of the tiny config: theta_0, the honest deltas, the honest aggregate and its evaluation."""

    raw: dict[str, Any]
    cfg: ExperimentConfig
    bundle: ModelBundle
    theta0: Adapter
    honest: dict[str, ClientUpdate]
    sizes: dict[str, int]
    sets: EvalSets
    families: dict[str, list[str]]
    outcome: RoundOutcome
    evaluation: GlobalEval
    slowest_client_s: float
    probed: dict[tuple[str, str], ClientStats] = field(default_factory=dict)

    def config(self, **sections: dict[str, Any]) -> ExperimentConfig:
        merged = dict(self.raw)
        for name, value in sections.items():
            merged[name] = {**self.raw.get(name, {}), **value}
        return parse_config(merged)

    def aggregate(
        self,
        updates: Mapping[str, ClientUpdate],
        cfg: ExperimentConfig | None = None,
        failed: Mapping[str, str] | None = None,
    ) -> RoundOutcome:
        cfg = cfg or self.cfg
        probe = None
        if cfg.aggregation.gain_source == "server_probe":

            def probe(cid: str, update: ClientUpdate) -> ClientStats:
                # The coordinator's measure depends on the delta alone: measure each delta once.
                key = (cid, sha256_hex(encode(update.delta)))
                if key not in self.probed:
                    self.probed[key] = probe_stats(
                        self.bundle, self.theta0, update, self.families[cid], self.sets.probe, cfg
                    )
                measured = self.probed[key].model_dump(include=PROBED_FIELDS)
                return update.stats.model_copy(update=measured)

        return aggregate_round(self.theta0, updates, failed or {}, ServerState(), cfg, 1, self.sizes, probe)

    def evaluate(self, adapter: Adapter) -> GlobalEval:
        return evaluate_families(self.bundle, adapter, self.sets.eval, self.cfg)

    def without(self, bad: str, cfg: ExperimentConfig | None = None) -> RoundOutcome:
        """The reference of a rejected client: the round over the honest others only."""
        return self.aggregate({c: u for c, u in self.honest.items() if c != bad}, cfg)


@pytest.fixture(scope="session")
def round1(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Round1:
    # Prepare: the tiny config of the suite; every client trains once from theta_0, and its delta
    # goes through the upload encoding exactly as in the pipeline.
    out = tmp_path_factory.mktemp("faults-core")
    raw = tiny_config(model_cache, out)
    cfg = parse_config(raw)
    bundle = load_bundle(cfg)
    theta0 = get_adapter(bundle.model)
    honest: dict[str, ClientUpdate] = {}
    sizes: dict[str, int] = {}
    slowest = 0.0
    for cid in CLIENTS:
        started = time.perf_counter()
        update = client_update(bundle, theta0, cfg, cid, 1, out / "work")
        slowest = max(slowest, time.perf_counter() - started)
        delta, sizes[cid] = transport(update.delta, cfg)
        honest[cid] = ClientUpdate(delta=delta, stats=update.stats)
    sets = eval_sets(cfg)
    families = {cid: sorted({e.family for e in client_data(cfg, cid).val}) for cid in CLIENTS}
    outcome = aggregate_round(theta0, honest, {}, ServerState(), cfg, 1, sizes)
    evaluation = evaluate_families(bundle, outcome.adapter, sets.eval, cfg)
    return Round1(raw, cfg, bundle, theta0, honest, sizes, sets, families, outcome, evaluation, slowest)


def replace_update(
    round1: Round1, cid: str, delta: Adapter | None = None, **stats: Any
) -> dict[str, ClientUpdate]:
    """The honest round with client ``cid``'s delta and/or reported stats replaced."""
    updates = dict(round1.honest)
    honest = round1.honest[cid]
    updates[cid] = ClientUpdate(
        delta=honest.delta if delta is None else delta, stats=honest.stats.model_copy(update=stats)
    )
    return updates


def row_of(outcome: RoundOutcome, cid: str) -> RoundRow:
    return next(r for r in outcome.rows if r.client_id == cid)


def same_adapter(a: Adapter, b: Adapter) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def assert_equals_the_honest_rest(round1: Round1, outcome: RoundOutcome, bad: str) -> None:
    """A rejected client: weight 0, and the round is exactly the round of the others."""
    reference = round1.without(bad)
    assert row_of(outcome, bad).accepted is False and row_of(outcome, bad).weight == 0.0
    assert outcome.accepted == reference.accepted
    assert {r.client_id: r.weight for r in outcome.rows if r.accepted} == {
        r.client_id: r.weight for r in reference.rows
    }
    assert same_adapter(outcome.adapter, reference.adapter)
    assert outcome.state == reference.state  # the rejected client's statistics stay unchanged


def last_committed(store: Any, ident: Any) -> int | None:
    """The store's last committed round, asked the way every resume path asks (fgrpo_io/ledger.py)."""
    from fgrpo_io import layout

    rounds = layout.committed_rounds(store.list_keys(layout.state_prefix(ident.prefix, ident.experiment)))
    return rounds[-1] if rounds else None
