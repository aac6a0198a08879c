"""Faults, bad input and dishonest clients (SPEC §3, §5): every round survives them and loses nothing.

Each case is a test that states the round's outcome, what is recorded, and that the bad client did
not take the round: its weight is 0, or within the bound documented in docs/faults.md, and the
global evaluation moves by at most EVAL_TOLERANCE against the honest reference. Most cases run on
the core (`aggregate_round`) with real deltas of three tiny clients trained once; crash, hang, S3
outage, quorum and a SIGKILLed coordinator go through the Prefect flows and the CLI.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from fgrpo_app.cli import app
from fgrpo_core.aggregation import aggregate_deltas
from fgrpo_core.config import ExperimentConfig, parse_config
from fgrpo_core.deltas import delta_norm, encode
from fgrpo_core.errors import ConfigError, QuorumError
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
from fgrpo_core.models import ModelBundle, get_adapter, load_bundle, set_adapter
from fgrpo_core.partition import EvalSets, client_data, eval_sets
from fgrpo_core.runner import transport
from fgrpo_core.types import Adapter, ClientStats, GlobalEval, RoundRow, ServerState
from fgrpo_io import exchange, layout
from fgrpo_io.environment import child_env
from fgrpo_io.exchange import ConflictError
from fgrpo_io.store import LocalStore, ObjectStore, S3Store, get_json, s3_client
from tests import fault_hooks
from tests.conftest import tiny_config
from tests.s3_server import TEST_REGION, point_aws_env_at

pytestmark = [pytest.mark.slow]


REPO = Path(__file__).resolve().parents[1]
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
    """The documented bound (docs/faults.md): liar at +gain_clip, everyone else at -gain_clip, capped."""
    agg = cfg.aggregation
    others = sum((n / own_n) ** agg.lam * math.exp(-2 * agg.gain_clip / agg.tau) for n in other_n)
    bound = (1 - agg.mu) / (1 + others) + agg.mu / (1 + len(other_n))
    return min(agg.weight_cap, bound)


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


@pytest.fixture(scope="module")
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


def _replace(round1: Round1, cid: str, delta: Adapter | None = None, **stats: Any) -> dict[str, ClientUpdate]:
    """The honest round with client ``cid``'s delta and/or reported stats replaced."""
    updates = dict(round1.honest)
    honest = round1.honest[cid]
    updates[cid] = ClientUpdate(
        delta=honest.delta if delta is None else delta, stats=honest.stats.model_copy(update=stats)
    )
    return updates


def _row(outcome: RoundOutcome, cid: str) -> RoundRow:
    return next(r for r in outcome.rows if r.client_id == cid)


def _same_adapter(a: Adapter, b: Adapter) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def _assert_equals_the_honest_rest(round1: Round1, outcome: RoundOutcome, bad: str) -> None:
    """A rejected client: weight 0, and the round is exactly the round of the others."""
    reference = round1.without(bad)
    assert _row(outcome, bad).accepted is False and _row(outcome, bad).weight == 0.0
    assert outcome.accepted == reference.accepted
    assert {r.client_id: r.weight for r in outcome.rows if r.accepted} == {
        r.client_id: r.weight for r in reference.rows
    }
    assert _same_adapter(outcome.adapter, reference.adapter)
    assert outcome.state == reference.state  # the rejected client's statistics stay unchanged


# --- invalid deltas: rejected with a reason, the round goes on -----------------------------------


def _nan(delta: Adapter) -> Adapter:
    key = sorted(delta)[0]
    bad = {k: v.clone() for k, v in delta.items()}
    bad[key].view(-1)[0] = float("nan")
    return bad


def _wrong_shape(delta: Adapter) -> Adapter:
    key = sorted(delta)[1]
    return {**delta, key: torch.zeros(delta[key].shape[0] + 1, *delta[key].shape[1:])}


def _missing_key(delta: Adapter) -> Adapter:
    return {k: v for k, v in delta.items() if k != sorted(delta)[-1]}


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [(_nan, "non_finite"), (_wrong_shape, "shape"), (_missing_key, "missing_key")],
    ids=["nan-delta", "wrong-shape", "missing-key"],
)
def test_invalid_delta_is_rejected_and_the_round_is_the_honest_rest(
    round1: Round1, corrupt: Callable[[Adapter], Adapter], reason: str
) -> None:
    # Prepare: owner-c's delta is broken.
    updates = _replace(round1, "owner-c", delta=corrupt(round1.honest["owner-c"].delta))
    # Execute
    outcome = round1.aggregate(updates)
    # Assert: rejected with its reason code and the tensor named; the round is the others' round.
    row = _row(outcome, "owner-c")
    assert row.reason.startswith(f"{reason}: ") and "lora" in row.reason
    _assert_equals_the_honest_rest(round1, outcome, "owner-c")


def test_replayed_stats_of_an_earlier_round_are_rejected(round1: Round1) -> None:
    # Prepare: owner-b re-sends its round-0 report (and delta) in round 1.
    updates = _replace(round1, "owner-b", round=0)
    # Execute
    outcome = round1.aggregate(updates)
    # Assert
    assert _row(outcome, "owner-b").reason.startswith("manifest: ")
    assert "replay" in _row(outcome, "owner-b").reason
    _assert_equals_the_honest_rest(round1, outcome, "owner-b")


def test_non_finite_reported_stats_reject_the_client_not_the_round(round1: Round1) -> None:
    # Prepare: owner-a's evaluation diverged; its report says r_post = NaN.
    updates = _replace(round1, "owner-a", r_post=float("nan"))
    # Execute
    outcome = round1.aggregate(updates)
    # Assert
    assert _row(outcome, "owner-a").reason.startswith("stats: ")
    _assert_equals_the_honest_rest(round1, outcome, "owner-a")


# --- dishonest clients with well-formed deltas -------------------------------------------------


def test_sign_flipped_delta_keeps_an_ordinary_weight_and_bounded_influence(round1: Round1) -> None:
    # Prepare: owner-b uploads -delta with its honest report (same norm: screening cannot see it).
    flipped = {k: -v for k, v in round1.honest["owner-b"].delta.items()}
    updates = _replace(round1, "owner-b", delta=flipped)
    # Execute
    outcome = round1.aggregate(updates)
    # Assert: its weight is the honest one (the same report), and the global moves away from the
    # honest global by exactly w_b * 2 * |delta_b|, no more.
    honest_weight = _row(round1.outcome, "owner-b").weight
    assert _row(outcome, "owner-b").accepted and _row(outcome, "owner-b").weight == honest_weight
    assert honest_weight <= worst_case_weight(4, [4, 4], round1.cfg)
    shift = delta_norm({k: outcome.adapter[k] - round1.outcome.adapter[k] for k in outcome.adapter})
    expected = (
        round1.cfg.aggregation.server_lr * honest_weight * 2 * delta_norm(round1.honest["owner-b"].delta)
    )
    assert shift == pytest.approx(expected, rel=1e-4)
    harm = normalised_reward(round1.evaluation) - normalised_reward(round1.evaluate(outcome.adapter))
    assert harm <= EVAL_TOLERANCE


@pytest.mark.parametrize("action", ["clip", "reject"])
def test_scaled_delta_is_clipped_to_the_median_bound_or_rejected(round1: Round1, action: str) -> None:
    # Prepare: owner-b uploads 100 x its delta; a control round without screening shows the harm.
    scaled = {k: 100 * v for k, v in round1.honest["owner-b"].delta.items()}
    updates = _replace(round1, "owner-b", delta=scaled)
    cfg = round1.config(aggregation={"norm_action": action})
    unscreened = round1.config(aggregation={"max_delta_norm_ratio": 1e9})
    # Execute
    outcome = round1.aggregate(updates, cfg)
    control = round1.aggregate(updates, unscreened)
    # Assert
    row = _row(outcome, "owner-b")
    ratio = cfg.aggregation.max_delta_norm_ratio
    norms = sorted(
        [delta_norm(round1.honest[c].delta) for c in ("owner-a", "owner-c")] + [delta_norm(scaled)]
    )
    median = norms[1]
    if action == "reject":
        assert row.reason.startswith(f"norm {delta_norm(scaled):.4g} > {ratio}")
        _assert_equals_the_honest_rest(round1, outcome, "owner-b")
    else:
        # Reference: the same round with owner-b's delta scaled down to ratio x median by hand.
        clipped = {k: v * (ratio * median / delta_norm(scaled)) for k, v in scaled.items()}
        weights = {r.client_id: r.weight for r in outcome.rows}
        reference = aggregate_deltas(
            round1.theta0,
            {**{c: round1.honest[c].delta for c in CLIENTS}, "owner-b": clipped},
            weights,
            1.0,
            "separate",
        )
        assert row.accepted and row.clipped and row.reason.startswith("norm clipped: ")
        assert delta_norm(clipped) == pytest.approx(ratio * median)
        assert row.weight == pytest.approx(_row(round1.outcome, "owner-b").weight)
        assert _same_adapter(outcome.adapter, reference)
    harm = normalised_reward(round1.evaluation) - normalised_reward(round1.evaluate(outcome.adapter))
    control_harm = normalised_reward(round1.evaluation) - normalised_reward(round1.evaluate(control.adapter))
    assert harm <= EVAL_TOLERANCE < control_harm


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ({}, "gain_clip"),
        ({"weight_cap": 0.5}, "weight_cap"),
        ({"gain_source": "server_probe"}, "probe"),
    ],
    ids=["reported", "reported-weight-cap", "server-probe"],
)
def test_inflated_r_post_is_bounded_by_gain_clip_cap_or_probe(
    round1: Round1, aggregation: dict[str, Any], expected: str
) -> None:
    # Prepare: owner-b reports r_post x 10 (its delta is its honest one).
    cfg = round1.config(aggregation=aggregation)
    liar = round1.honest["owner-b"].stats
    updates = _replace(round1, "owner-b", r_post=10 * liar.r_post)
    # Execute
    outcome = round1.aggregate(updates, cfg)
    # Assert
    row = _row(outcome, "owner-b")
    others = [(_row(outcome, c).gain, _row(outcome, c).n_k) for c in ("owner-a", "owner-c")]
    assert row.reported_r_post == 10 * liar.r_post
    if expected == "probe":
        # The coordinator measured r_post itself: the lie changes nothing.
        honest = round1.aggregate(round1.honest, cfg)
        assert [r.model_dump(exclude={"reported_r_post"}) for r in outcome.rows] == [
            r.model_dump(exclude={"reported_r_post"}) for r in honest.rows
        ]
        assert _same_adapter(outcome.adapter, honest.adapter)
    else:
        # The gain hits the clip; the weight is the reference formula at +gain_clip, under the bound.
        assert row.gain >= cfg.aggregation.gain_clip
        reference = fgrpo_weight(cfg.aggregation.gain_clip, row.n_k, others, cfg)
        assert row.weight == pytest.approx(min(reference, cfg.aggregation.weight_cap), abs=1e-12)
        assert row.weight <= worst_case_weight(row.n_k, [n for _, n in others], cfg) + 1e-12
        if expected == "weight_cap":
            assert row.weight == pytest.approx(0.5)
    harm = normalised_reward(round1.evaluation) - normalised_reward(round1.evaluate(outcome.adapter))
    assert harm <= EVAL_TOLERANCE


@pytest.mark.parametrize("gain_source", ["reported", "server_probe"])
def test_free_rider_zero_delta_gains_nothing_and_only_dilutes(round1: Round1, gain_source: str) -> None:
    # Prepare: owner-c trains nothing and uploads zeros; it reports what it measured (r_post = r_pre).
    stats = round1.honest["owner-c"].stats
    zero = {k: torch.zeros_like(v) for k, v in round1.honest["owner-c"].delta.items()}
    updates = _replace(round1, "owner-c", delta=zero, r_post=stats.r_pre, sigma_diff=0.0)
    cfg = round1.config(aggregation={"gain_source": gain_source})
    # Execute
    outcome = round1.aggregate(updates, cfg)
    # Assert: no gain (theta + 0 = theta: a probe measures r_post = r_pre exactly), so a weight of
    # at most the data-size share; the global is the others' step shrunk by (1 - w_c).
    row = _row(outcome, "owner-c")
    assert row.gain == 0.0 and row.r_post == row.r_pre
    assert row.weight <= row.n_k / sum(_row(outcome, c).n_k for c in CLIENTS) + 1e-12
    weights = {r.client_id: r.weight for r in outcome.rows}
    reference = aggregate_deltas(
        round1.theta0, {c: updates[c].delta for c in CLIENTS}, weights, 1.0, "separate"
    )
    assert _same_adapter(outcome.adapter, reference)
    harm = normalised_reward(round1.evaluation) - normalised_reward(round1.evaluate(outcome.adapter))
    assert harm <= EVAL_TOLERANCE


def test_below_quorum_raises_listing_every_client_and_why(round1: Round1) -> None:
    # Prepare: two of three deltas are bad and the round needs two.
    updates = _replace(round1, "owner-a", delta=_nan(round1.honest["owner-a"].delta))
    failed = {"owner-c": "client failed: RuntimeError: boom"}
    del updates["owner-c"]
    # Execute / Assert
    with pytest.raises(QuorumError) as err:
        round1.aggregate(updates, failed=failed)
    message = str(err.value)
    assert "1 valid delta(s) ['owner-b']" in message and "federation.min_clients is 2" in message
    assert "owner-a: non_finite" in message and "owner-c: client failed: RuntimeError: boom" in message
    assert "previous global adapter stays" in message


# --- the store: sha256, replays, identity, idempotent writes (through the aggregate task) --------


@dataclass
class StoreRound:
    cfg: ExperimentConfig
    store: LocalStore
    ident: exchange.Identity


def _store_round(round1: Round1, root: Path, **sections: dict[str, Any]) -> StoreRound:
    """theta_0 committed and the three honest round-1 deltas uploaded, in a fresh local store."""
    cfg = round1.config(store={"root": str(root)}, **sections)
    store = LocalStore(root)
    ident = exchange.identity(cfg)
    key = exchange.write_global(store, ident, 0, round1.theta0, clients=[], strategy="init")
    exchange.write_state(store, ident, ServerState(round=0, global_key=key))
    for cid in CLIENTS:
        update = round1.honest[cid]
        exchange.write_client_delta(store, ident, 1, update.delta, update.stats, "float32")
    return StoreRound(cfg, store, ident)


def _aggregate_task(sr: StoreRound, t: int = 1, delivered: tuple[str, ...] = CLIENTS) -> dict[str, Any]:
    from tasks.aggregate import aggregate_task

    return aggregate_task.fn(sr.cfg, t, list(delivered), {})


def _snapshot(store: LocalStore) -> dict[str, str]:
    return {
        p.relative_to(store.root).as_posix(): sha256_hex(p.read_bytes())
        for p in sorted(store.root.rglob("*"))
        if p.is_file()
    }


def test_bytes_corrupted_in_the_store_fail_the_sha256_check(round1: Round1, tmp_path: Path) -> None:
    # Prepare: one byte of owner-a's committed delta flips on disk.
    sr = _store_round(round1, tmp_path / "store")
    path = sr.store.root / layout.client_delta_key(sr.ident.prefix, sr.ident.experiment, "owner-a", 1)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    # Execute
    result = _aggregate_task(sr)
    # Assert: recorded as a sha256 mismatch naming the object; the committed global is the others'.
    row = next(r for r in result["rows"] if r["client_id"] == "owner-a")
    assert not row["accepted"] and row["weight"] == 0.0 and row["reason"].startswith("sha256: ")
    assert "delta.safetensors" in row["reason"] and "upload it again" in row["reason"]
    committed = exchange.read_global(sr.store, sr.ident, 1)
    assert _same_adapter(committed, round1.without("owner-a").adapter)


@pytest.mark.parametrize(
    ("field_name", "value"),
    [("experiment", "other-experiment"), ("base_model_id", "another-base-model"), ("round", 0)],
    ids=["other-experiment", "other-base-model", "replay-of-round-0"],
)
def test_manifest_of_another_experiment_model_or_round_is_rejected(
    round1: Round1, tmp_path: Path, field_name: str, value: Any
) -> None:
    # Prepare: owner-c's manifest (with its stats, consistently) claims another identity; the
    # owner may write its own prefix, so nothing but the manifest check stands in the way.
    sr = _store_round(round1, tmp_path / "store")
    mkey = layout.client_manifest_key(sr.ident.prefix, sr.ident.experiment, "owner-c", 1)
    manifest = get_json(sr.store, mkey)
    manifest[field_name] = value
    if field_name == "round":
        manifest["stats"]["round"] = value
    sr.store.put_bytes(mkey, json.dumps(manifest).encode(), overwrite=True)
    # Execute
    result = _aggregate_task(sr)
    # Assert
    row = next(r for r in result["rows"] if r["client_id"] == "owner-c")
    assert not row["accepted"] and row["reason"].startswith(f"manifest: client manifest field '{field_name}'")
    assert _same_adapter(exchange.read_global(sr.store, sr.ident, 1), round1.without("owner-c").adapter)


def test_replayed_round_1_upload_in_round_2_is_rejected(round1: Round1, tmp_path: Path) -> None:
    # Prepare: round 1 committed; in round 2 owners a and b upload, owner-c copies its round-1
    # delta and manifest byte for byte under its round-2 keys (a replay).
    sr = _store_round(round1, tmp_path / "store")
    _aggregate_task(sr, 1)
    for cid in ("owner-a", "owner-b"):
        update = round1.honest[cid]
        exchange.write_client_delta(
            sr.store, sr.ident, 2, update.delta, update.stats.model_copy(update={"round": 2}), "float32"
        )
    for name in ("delta.safetensors", "manifest.json"):
        old = layout.client_prefix(sr.ident.prefix, sr.ident.experiment, "owner-c") + f"round-0001/{name}"
        sr.store.put_bytes(old.replace("round-0001", "round-0002"), sr.store.get_bytes(old))
    # Execute
    result = _aggregate_task(sr, 2)
    # Assert
    row = next(r for r in result["rows"] if r["client_id"] == "owner-c")
    assert not row["accepted"] and row["weight"] == 0.0
    assert "field 'round' is 1 but 2 was expected (a replay" in row["reason"]
    assert exchange.read_global_manifest(sr.store, sr.ident, 2).clients == ["owner-a", "owner-b"]


def test_quorum_miss_in_the_aggregate_task_writes_nothing(round1: Round1, tmp_path: Path) -> None:
    # Prepare: min_clients 3, and owner-b's delta is corrupted in the store.
    sr = _store_round(round1, tmp_path / "store", federation={"min_clients": 3})
    key = layout.client_delta_key(sr.ident.prefix, sr.ident.experiment, "owner-b", 1)
    sr.store.put_bytes(key, b"not a safetensors file", overwrite=True)
    before = _snapshot(sr.store)
    # Execute
    with pytest.raises(QuorumError) as err:
        _aggregate_task(sr)
    # Assert: not one object added or changed; theta_0 still reads back against its sha256.
    assert _snapshot(sr.store) == before
    assert "owner-b: sha256" in str(err.value)
    assert exchange.last_committed_round(sr.store, sr.ident) == 0
    assert _same_adapter(exchange.read_global(sr.store, sr.ident, 0), round1.theta0)


def test_theta_0_is_the_seeded_adapter_even_on_a_used_model(round1: Round1, tmp_path: Path) -> None:
    # Prepare: this worker's pooled model holds a trained adapter (an earlier experiment's round).
    from fgrpo_io import runtime
    from tasks.aggregate import initialise_task

    cfg = round1.config(store={"root": str(tmp_path / "store")})
    with runtime.borrowed_bundle(cfg) as bundle:
        set_adapter(bundle.model, round1.outcome.adapter)
    # Execute
    initialise_task.fn(cfg)
    # Assert: theta_0 is the adapter as seeded (lora.init_seed), not what the model held.
    theta0 = exchange.read_global(LocalStore(tmp_path / "store"), exchange.identity(cfg), 0)
    assert _same_adapter(theta0, round1.theta0)


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    env = request.getfixturevalue("s3_env")
    return S3Store(env.bucket, endpoint_url=env.endpoint_url, region=env.region)


def test_retried_upload_never_overwrites_a_committed_object(round1: Round1, any_store: ObjectStore) -> None:
    # Prepare: owner-a's delta committed once.
    ident = exchange.identity(round1.cfg)
    update = round1.honest["owner-a"]
    mkey, first = exchange.write_client_delta(any_store, ident, 1, update.delta, update.stats, "float32")
    gkey = exchange.write_global(any_store, ident, 1, round1.outcome.adapter, list(CLIENTS), "fgrpo")
    keys = [first.delta_key, mkey, gkey, layout.global_manifest_key(ident.prefix, ident.experiment, 1)]
    committed = [any_store.get_bytes(k) for k in keys]
    other = {k: v + 1e-3 for k, v in update.delta.items()}
    # Execute: a retry with the same bytes passes; a "retry" that computed something else fails.
    again_key, again = exchange.write_client_delta(any_store, ident, 1, update.delta, update.stats, "float32")
    with pytest.raises(ConflictError, match="never replaced"):
        exchange.write_client_delta(any_store, ident, 1, other, update.stats, "float32")
    with pytest.raises(ConflictError, match="never overwritten"):
        exchange.write_global(any_store, ident, 1, other, list(CLIENTS), "fgrpo")
    # Assert: the retry returns the committed manifest; no committed byte changed.
    assert again_key == mkey and again == first
    assert [any_store.get_bytes(k) for k in keys] == committed
    assert sha256_hex(any_store.get_bytes(first.delta_key)) == first.sha256


# --- malformed configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "change", "needle"),
    [
        ("federation", {"min_clients": 0}, "federation.min_clients"),
        ("federation", {"min_clients": 4}, "federation.min_clients (4) exceeds"),
        ("federation", {"round_timeout_s": -1}, "federation.round_timeout_s"),
        ("aggregation", {"norm_action": "drop"}, "aggregation.norm_action"),
        ("aggregation", {"max_delta_norm_ratio": 1.0}, "aggregation.max_delta_norm_ratio"),
        ("aggregation", {"gain_source": "trust-me"}, "aggregation.gain_source"),
        ("aggregation", {"weight_cap": 0.4}, "weight_cap (0.4) x federation.min_clients (2) < 1"),
        ("aggregation", {"gain_clip": 0}, "aggregation.gain_clip"),
    ],
)
def test_malformed_config_names_the_field_and_writes_nothing(
    tmp_path: Path, model_cache: Path, section: str, change: dict[str, Any], needle: str
) -> None:
    # Prepare
    out = tmp_path / "out"
    raw = tiny_config(model_cache, out, **{section: change})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    # Execute
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    # Assert: both name the field; the CLI stops before any store, tracker or flow exists.
    assert needle in str(err.value)
    assert result.exit_code == 2 and needle in result.output
    assert not out.exists()


# --- through the Prefect flows: crash, hang, quorum, S3 outage -------------------------------------


def _artifact_markdown(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return "\n".join(str(a.data) for a in artifacts)


@pytest.fixture(scope="module")
def crash_and_hang(
    round1: Round1, tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> dict[str, Any]:
    """One round: owner-a crashes, owner-b trains, owner-c hangs past round_timeout_s."""
    from flows.experiment import run_experiment

    out = tmp_path_factory.mktemp("faults-crash-hang")
    raw = tiny_config(Path(round1.cfg.model.cache_dir), out)
    raw["name"] = "tiny-crash-hang"
    raw["clients"][0]["reward"] = "tests.fault_hooks.crashing_exact"
    raw["clients"][2]["reward"] = "tests.fault_hooks.hanging_exact"
    # Well above an honest client's time on this machine (the round waits that long for owner-c).
    timeout = max(8.0, 3 * round1.slowest_client_s + 5)
    raw["federation"] = {"rounds": 1, "min_clients": 1, "round_timeout_s": timeout, "max_parallel_clients": 3}
    cfg = parse_config(raw)
    ident = exchange.identity(cfg)
    store = LocalStore(Path(cfg.store.root))
    # owner-c's call blocks until round 1 is committed (at most 120 s), then trains and uploads.
    fault_hooks.arm_hang(store.root / layout.global_manifest_key(ident.prefix, ident.experiment, 1), 120.0)
    summary = run_experiment(cfg)
    return {
        "cfg": cfg,
        "summary": summary,
        "store": store,
        "ident": ident,
    }


def test_crashing_client_is_recorded_and_the_round_commits_without_it(
    round1: Round1, crash_and_hang: dict[str, Any]
) -> None:
    # Prepare
    from mlflow import MlflowClient

    cfg, report = crash_and_hang["cfg"], crash_and_hang["summary"]["rounds"][0]
    rows = {r["client_id"]: r for r in report["rows"]}
    # Execute: the committed global against the core's round over owner-b alone.
    committed = exchange.read_global(crash_and_hang["store"], crash_and_hang["ident"], 1)
    reference = round1.aggregate(
        {"owner-b": round1.honest["owner-b"]}, round1.config(federation={"min_clients": 1})
    )
    # Assert: owner-a recorded with the crash's message in the round table, the Prefect artifact
    # and MLflow; owner-b took the round alone (weight 1), bit-identical to the core's round.
    assert not rows["owner-a"]["accepted"] and rows["owner-a"]["weight"] == 0.0
    assert (
        rows["owner-a"]["reason"].startswith("client failed: ")
        and fault_hooks.CRASH_MESSAGE in rows["owner-a"]["reason"]
    )
    assert rows["owner-b"]["accepted"] and rows["owner-b"]["weight"] == 1.0
    assert _same_adapter(committed, reference.adapter)
    markdown = _artifact_markdown("tiny-crash-hang-round-0001")
    assert fault_hooks.CRASH_MESSAGE in markdown and "| owner-a | **no** |" in markdown
    uri = cfg.tracking.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    metrics = client.get_run(report["mlflow_round_run_id"]).data.metrics
    assert metrics["client/owner-a/accepted"] == 0.0 and metrics["client/owner-a/weight"] == 0.0
    table = json.loads(
        Path(client.download_artifacts(report["mlflow_round_run_id"], "round_table.json")).read_text()
    )
    logged = {r["client_id"]: r for r in table["clients"]}
    assert fault_hooks.CRASH_MESSAGE in logged["owner-a"]["reason"]


def test_hanging_client_is_late_and_its_late_upload_is_ignored(crash_and_hang: dict[str, Any]) -> None:
    # Prepare
    cfg, report = crash_and_hang["cfg"], crash_and_hang["summary"]["rounds"][0]
    store, ident = crash_and_hang["store"], crash_and_hang["ident"]
    rows = {r["client_id"]: r for r in report["rows"]}
    # Execute: what the store holds after the flow returned.
    late = exchange.committed_client_manifest(store, ident, 1, "owner-c")
    committed = exchange.read_global_manifest(store, ident, 1)
    # Assert: recorded as late; the round committed without it; its upload came after the commit
    # (it hung until then) and is in no global adapter.
    timeout = cfg.federation.round_timeout_s
    assert not rows["owner-c"]["accepted"] and rows["owner-c"]["weight"] == 0.0
    assert rows["owner-c"]["reason"] == f"no delta within round_timeout_s={timeout:g}"
    assert late is not None and datetime.fromisoformat(late.created_at) > datetime.fromisoformat(
        committed.created_at
    )
    assert committed.clients == ["owner-b"]
    assert exchange.last_committed_round(store, ident) == 1


def test_round_below_quorum_fails_cleanly_through_the_flow(
    round1: Round1, tmp_path: Path, prefect_harness: None
) -> None:
    # Prepare: two owners, both needed; owner-a crashes.
    from flows.experiment import run_experiment

    raw = tiny_config(Path(round1.cfg.model.cache_dir), tmp_path)
    raw["name"] = "tiny-quorum"
    raw["clients"] = raw["clients"][:2]
    raw["clients"][0]["reward"] = "tests.fault_hooks.crashing_exact"
    raw["federation"] = {"rounds": 1, "min_clients": 2}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw["tracking"] = {"enabled": True, "tracking_uri": uri}
    cfg = parse_config(raw)
    store, ident = LocalStore(tmp_path / "store"), exchange.identity(cfg)
    # Execute
    with pytest.raises(QuorumError) as err:
        run_experiment(cfg)
    # Assert: the message names each client and why; round 1 has no object at all; theta_0 is intact.
    message = str(err.value)
    assert "owner-a: client failed: " in message and fault_hooks.CRASH_MESSAGE in message
    assert "1 valid delta(s) ['owner-b']" in message
    assert exchange.last_committed_round(store, ident) == 0
    assert store.list_keys(layout.global_prefix(ident.prefix, ident.experiment) + "round-0001") == []
    manifest = exchange.read_global_manifest(store, ident, 0)
    assert sha256_hex(store.get_bytes(manifest.adapter_key)) == manifest.sha256
    assert _same_adapter(exchange.read_global(store, ident, 0), round1.theta0)
    assert "not committed" in _artifact_markdown("tiny-quorum-round-0001")
    # Assert: the MLflow parent run says FAILED instead of staying RUNNING.
    from mlflow import MlflowClient

    from fgrpo_io.tracking import MLFLOW_EXPERIMENT, ROLE_TAG

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(MLFLOW_EXPERIMENT).experiment_id
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'experiment'")
    assert [r.info.status for r in runs] == ["FAILED"]


@dataclass
class FlakyS3:
    """A moto S3 server on a fixed port of 127.0.0.1 that can refuse connections for a while."""

    port: int
    server: Any
    events: dict[str, float] = field(default_factory=dict)
    restart: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def outage(self, seconds: float) -> None:
        """Stop the server now (connections are refused) and start a new one ``seconds`` later."""
        from moto.server import ThreadedMotoServer

        self.server.stop()
        self.events["down"] = time.time()
        with socket.socket() as sock:
            self.events["refused"] = float(sock.connect_ex(("127.0.0.1", self.port)) != 0)

        def come_back() -> None:
            time.sleep(seconds)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            server.start()  # moto keeps its buckets in this process: the data is still there
            self.server = server
            self.events["up"] = time.time()

        self.restart = threading.Thread(target=come_back, daemon=True)
        self.restart.start()


@pytest.fixture
def flaky_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[FlakyS3]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    flaky = FlakyS3(port=int(server.get_host_and_port()[1]), server=server)
    point_aws_env_at(monkeypatch, flaky.endpoint)
    s3_client(flaky.endpoint, TEST_REGION).create_bucket(Bucket="fgrpo-flaky")
    try:
        yield flaky
    finally:
        if flaky.restart is not None:
            flaky.restart.join(timeout=30)
        flaky.server.stop()


def test_s3_outage_mid_round_is_carried_by_retries(
    round1: Round1, tmp_path: Path, prefect_harness: None, flaky_s3: FlakyS3
) -> None:
    # Prepare: S3 on a server that goes away for 4 s right before owner-a uploads (its last
    # evaluation): shorter than the client task's retry delay (5 s), longer than boto3's retries.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        TaskRunFilter,
        TaskRunFilterName,
    )

    from flows.experiment import run_experiment

    raw = tiny_config(Path(round1.cfg.model.cache_dir), tmp_path)
    raw["name"] = "tiny-outage"
    raw["clients"][0]["reward"] = "tests.fault_hooks.outage_exact"
    raw["federation"] = {"rounds": 1, "min_clients": 3}
    raw["store"] = {"kind": "s3", "bucket": "fgrpo-flaky", "prefix": "fgrpo"}
    raw["tracking"] = {"enabled": False}
    cfg = parse_config(raw)
    fault_hooks.arm_outage(lambda: flaky_s3.outage(4.0))
    # Execute
    summary = run_experiment(cfg)
    # Assert: the outage happened (connections refused) while owner-a was about to upload; its
    # task ran twice; all three deltas made it; the global is bit-identical to the core's round.
    assert flaky_s3.events["refused"] == 1.0 and flaky_s3.events["up"] - flaky_s3.events["down"] >= 4.0
    store = S3Store("fgrpo-flaky", endpoint_url=flaky_s3.endpoint)
    ident = exchange.identity(cfg)
    manifest = exchange.committed_client_manifest(store, ident, 1, "owner-a")
    assert (
        manifest is not None
        and datetime.fromisoformat(manifest.created_at).timestamp() > flaky_s3.events["up"]
    )
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["tiny-outage-round-0001"])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="train-%")),
        )
    runs = {t.name: t.run_count for t in task_runs}
    assert runs == {"train-owner-a-round-1": 2, "train-owner-b-round-1": 1, "train-owner-c-round-1": 1}
    rows = summary["rounds"][0]["rows"]
    assert [r["client_id"] for r in rows if r["accepted"]] == list(CLIENTS)
    global_manifest = exchange.read_global_manifest(store, ident, 1)
    assert global_manifest.sha256 == sha256_hex(encode(round1.outcome.adapter))


# --- a coordinator killed with SIGKILL resumes and ends where an uninterrupted run ends ----------


def _cli_env(prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FGRPO_", "MLFLOW_"))}
    return child_env(env, PREFECT_HOME=str(prefect_home))


def _bare_round_2(round1: Round1) -> RoundOutcome:
    """Round 2 of the bare loop after round 1: the calls `fgrpo_core.runner.run_in_process` makes
    (the pipeline equals it: tests/test_pipeline.py::test_pipeline_equals_the_bare_loop)."""
    theta1, updates, sizes = round1.outcome.adapter, {}, {}
    for cid in CLIENTS:
        work = Path(round1.cfg.output_dir) / "work"
        update = client_update(round1.bundle, theta1, round1.cfg, cid, 2, work)
        delta, sizes[cid] = transport(update.delta, round1.cfg)
        updates[cid] = ClientUpdate(delta=delta, stats=update.stats)
    return aggregate_round(theta1, updates, {}, round1.outcome.state, round1.cfg, 2, sizes)


def test_sigkilled_coordinator_resumes_to_the_uninterrupted_result(round1: Round1, tmp_path: Path) -> None:
    # Prepare: `fgrpo run --json` on the 2-round tiny config, local store, MLflow on SQLite.
    from mlflow import MlflowClient

    raw = tiny_config(Path(round1.cfg.model.cache_dir), tmp_path / "out")
    cfg = parse_config(raw)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    store, ident = LocalStore(Path(cfg.store.root)), exchange.identity(cfg)
    state_1 = store.root / layout.state_key(ident.prefix, ident.experiment, 1)
    command = [sys.executable, "-m", "fgrpo_app.cli", "run", "--config", str(path), "--json"]
    env = _cli_env(tmp_path / "prefect-home")

    def start(name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.out").open("wb") as out, (tmp_path / f"{name}.err").open("wb") as err:
            # Own session: the kill takes the CLI and the ephemeral Prefect server it started.
            return subprocess.Popen(
                command, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True
            )

    # Execute: kill -9 as soon as round 1 is committed, then run the same command again.
    first = start("first")
    deadline = time.monotonic() + 300
    while not state_1.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, (tmp_path / "first.err").read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = {
        "committed": exchange.last_committed_round(store, ident),
        "reported_1": store.exists(
            layout.global_prefix(ident.prefix, ident.experiment) + "round-0001/report.json"
        ),
    }
    second = start("second")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.err").read_text()[-3000:]
    summary = json.loads((tmp_path / "second.out").read_text())
    reference = _bare_round_2(round1)
    # Assert: resumed at round 1, both rounds reported, the final adapter is the bare loop's.
    assert killed_at["committed"] == 1, killed_at
    assert summary["resumed_from_round"] == 1
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    final = exchange.read_global_manifest(store, ident, 2)
    assert final.sha256 == hashlib.sha256(encode(reference.adapter)).hexdigest()
    for outcome, report in zip((round1.outcome, reference), summary["rounds"], strict=True):
        assert {r.client_id: r.weight for r in outcome.rows} == {
            r["client_id"]: r["weight"] for r in report["rows"]
        }
    # Nothing lost in MLflow either: each client's series has both rounds, both versions registered.
    uri = cfg.tracking.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for cid in CLIENTS:
        history = client.get_metric_history(summary["mlflow_run_id"], f"client/{cid}/weight")
        assert sorted({m.step for m in history}) == [1, 2]
    versions = client.search_model_versions(f"name = 'fgrpo-{cfg.name}'")
    assert {v.tags.get("round") for v in versions} == {"1", "2"}
