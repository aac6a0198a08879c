"""The two-owner federation that bench/attacks.py attacks, and the coordinator's round over the store.

Two owners of the tiny model (``owner-a`` add1, ``owner-b`` mul1: the issue's setting, where a
round's median is the mean of two norms), on the suite's tiny budget (a copy of
``tests/conftest.py::tiny_config``, which bench may not import). Every delivery goes through the
store as in the pipeline: the owner's ``exchange.write_client_delta`` (or an attacker's own
writes under its prefix), then the coordinator's steps of ``tasks/aggregate.py`` without Prefect:
``exchange.read_client_manifest`` (envelope), then ``aggregate_streamed`` reading each delta when
it needs it (``exchange.read_delta``: bounded read, sha256; stats, delta, norm screening, weights,
optional server probe) and the commit gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fgrpo_core.commit_gate import gate_reason
from fgrpo_core.config import ExperimentConfig, parse_config
from fgrpo_core.deltas import encode, sha256_hex
from fgrpo_core.errors import DeltaValidationError, QuorumError
from fgrpo_core.families import get_family
from fgrpo_core.federation import (
    ClientUpdate,
    aggregate_streamed,
    client_update,
    evaluate_families,
    server_probe,
)
from fgrpo_core.manifest import ClientManifest
from fgrpo_core.models import ModelBundle, load_bundle
from fgrpo_core.partition import EvalSets, eval_sets
from fgrpo_core.types import Adapter, GlobalEval, RoundRow, ServerState
from fgrpo_core.update_checks import Expected
from fgrpo_io import exchange
from fgrpo_io.exchange import Identity
from fgrpo_io.store import LocalStore, ObjectStore

HONEST = "owner-a"
ATTACKER = "owner-b"
OWNERS = (HONEST, ATTACKER)

# An owner's delivery for round t: writes under its own prefix (honestly or not).
Delivery = Callable[[ObjectStore, Identity, int], None]


def two_owner_config(model_cache: Path, out: Path, warmup_steps: int = 200) -> dict[str, Any]:
    """The suite's tiny experiment with two owners; min_clients 1, so a rejected attacker leaves a round.

    ``warmup_steps``: the tiny model's supervised warm-up (200 as in the suite; fewer in a smoke test).
    """
    return {
        "name": "attacks",
        "seed": 0,
        "output_dir": str(out),
        "model": {"source": "tiny", "cache_dir": str(model_cache), "tiny_warmup_steps": warmup_steps},
        "lora": {"r": 4, "alpha": 8},
        "grpo": {
            "local_steps": 2,
            "learning_rate": 1e-3,
            "num_generations": 4,
            "per_device_train_batch_size": 8,
            "max_completion_length": 4,
        },
        # configs/tiny.yaml's evaluation sizes (the suite's 12 prompts move in steps of 1/12)
        "data": {"families": ["add1", "mul1"], "eval_per_family": 64, "probe_per_family": 32},
        "clients": [
            {"id": HONEST, "families": ["add1"], "n_train": 16, "n_val": 8},
            {"id": ATTACKER, "families": ["mul1"], "n_train": 16, "n_val": 8},
        ],
        "evaluation": {"max_new_tokens": 4},
        "federation": {"rounds": 2, "min_clients": 1},
        "store": {"kind": "local", "root": str(out / "store")},
        "tracking": {"tracking_uri": f"sqlite:///{out / 'mlflow.db'}"},
    }


@dataclass(frozen=True)
class Measure:
    """The coordinator's evaluation of one global adapter (the measures of tests/faults/shared.py)."""

    macro_accuracy: float
    normalised_reward: float  # macro mean reward, each family's rescaled to [0, 1] by its range
    max_abs_theta: float


@dataclass
class RoundReport:
    """One round as the coordinator saw it: the gate's decision and the head it leaves."""

    status: str  # "committed", "refused" (commit gate) or "not committed" (QuorumError)
    reason: str
    rows: list[RoundRow]
    head: Adapter
    state: ServerState
    measure: Measure


def normalised_reward(evaluation: GlobalEval) -> float:
    values = []
    for family, score in evaluation.families.items():
        lo, hi = get_family(family).reward_range
        values.append((score.mean_reward - lo) / (hi - lo))
    return float(np.mean(values))


def max_abs(adapter: Adapter) -> float:
    return max(float(v.abs().max()) for v in adapter.values())


def honest_delivery(update: ClientUpdate, cfg: ExperimentConfig) -> Delivery:
    """What an honest owner uploads: its delta and stats, through the owner's own write."""

    def deliver(store: ObjectStore, ident: Identity, t: int) -> None:
        exchange.write_client_delta(store, ident, t, update.delta, update.stats, cfg.federation.delta_dtype)

    return deliver


@dataclass
class Federation:
    """The tiny model loaded once, theta_0, the evaluation sets, and memoised training and evaluation."""

    raw: dict[str, Any]
    bundle: ModelBundle
    theta0: Adapter
    sets: EvalSets
    store: LocalStore
    _trained: dict[tuple[str, str, int], ClientUpdate] = field(default_factory=dict)
    _measured: dict[str, Measure] = field(default_factory=dict)

    @classmethod
    def build(cls, model_cache: Path, out: Path, warmup_steps: int = 200) -> Federation:
        raw = two_owner_config(model_cache, out, warmup_steps)
        cfg = parse_config(raw)
        bundle = load_bundle(cfg)
        return cls(raw, bundle, dict(bundle.initial_adapter), eval_sets(cfg), LocalStore(out / "store"))

    def config(self, name: str, **sections: Mapping[str, Any]) -> ExperimentConfig:
        """The base config under its own experiment name (its own store keys), sections merged in."""
        merged: dict[str, Any] = {**self.raw, "name": name}
        for section, value in sections.items():
            merged[section] = {**self.raw.get(section, {}), **value}
        return parse_config(merged)

    def train(self, head: Adapter, cid: str, t: int) -> ClientUpdate:
        """Owner ``cid``'s honest round-t update from ``head`` (seeded per round and owner: memoised)."""
        key = (sha256_hex(encode(head)), cid, t)
        if key not in self._trained:
            cfg = parse_config(self.raw)
            work = Path(cfg.output_dir) / "work"
            self._trained[key] = client_update(self.bundle, head, cfg, cid, t, work)
        return self._trained[key]

    def measure(self, adapter: Adapter) -> Measure:
        key = sha256_hex(encode(adapter))
        if key not in self._measured:
            biggest = max_abs(adapter)
            try:
                ev = evaluate_families(self.bundle, adapter, self.sets.eval, parse_config(self.raw))
                self._measured[key] = Measure(ev.macro_accuracy, normalised_reward(ev), biggest)
            except (RuntimeError, ValueError):  # a poisoned adapter may not even generate
                self._measured[key] = Measure(math.nan, math.nan, biggest)
        return self._measured[key]

    def round(
        self,
        cfg: ExperimentConfig,
        t: int,
        head: Adapter,
        state: ServerState,
        deliveries: Mapping[str, Delivery],
    ) -> RoundReport:
        """Owners deliver round t into the store; the coordinator reads, aggregates and gates it."""
        ident = exchange.identity(cfg)
        for cid in sorted(deliveries):
            deliveries[cid](self.store, ident, t)
        failures: dict[str, str] = {}
        expected: dict[str, Expected] = {}
        manifests: dict[str, ClientManifest] = {}
        for cid in sorted(deliveries):  # as tasks/aggregate.aggregate_task: manifests first
            expected[cid] = exchange.expected_update(ident, t, cid, head, cfg.federation.delta_dtype)
            try:
                manifests[cid] = exchange.read_client_manifest(self.store, ident, expected[cid])
            except DeltaValidationError as err:
                failures[cid] = f"{err.reason}: {err}"

        def load(cid: str) -> Adapter:  # a delta is read when the aggregation needs it
            return exchange.read_delta(self.store, manifests[cid], expected[cid])

        stats = {cid: m.stats for cid, m in manifests.items()}
        sizes = {cid: m.nbytes for cid, m in manifests.items()}
        probe = server_probe(self.bundle, head, cfg)
        try:
            outcome = aggregate_streamed(head, stats, load, failures, state, cfg, t, sizes, probe)
        except QuorumError as err:
            return RoundReport("not committed", str(err), [], head, state, self.measure(head))
        candidate = self.measure(outcome.adapter)
        reason = gate_reason(
            outcome.adapter,
            candidate.macro_accuracy,
            self.measure(head).macro_accuracy,
            cfg.federation.max_eval_drop,
        )
        if reason:  # as tasks/aggregate.commit_task: theta_{t-1} and its state stay the head
            return RoundReport("refused", reason, outcome.rows, head, state, self.measure(head))
        return RoundReport("committed", "", outcome.rows, outcome.adapter, outcome.state, candidate)

    def honest_round(self, cfg: ExperimentConfig, t: int, head: Adapter, state: ServerState) -> RoundReport:
        """Round t with both owners honest, trained from ``head``."""
        deliveries = {cid: honest_delivery(self.train(head, cid, t), cfg) for cid in OWNERS}
        return self.round(cfg, t, head, state, deliveries)

    def next_round(self, cfg: ExperimentConfig, report: RoundReport, t: int) -> str:
        """Whether round t after ``report`` commits with both owners honest (or why not)."""
        try:
            after = self.honest_round(cfg, t, report.head, report.state)
        except (RuntimeError, ValueError) as err:  # e.g. sampling from a poisoned global
            return f"crashed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
        return after.status if after.status == "committed" else f"{after.status}: {after.reason[:160]}"


def row_of(report: RoundReport, cid: str) -> RoundRow | None:
    return next((r for r in report.rows if r.client_id == cid), None)


def row(
    attack: str, variant: str, injected: str, report: RoundReport, reference: RoundReport, next_round: str
) -> dict[str, Any]:
    """One measured attack: the attacker's and the honest owner's rows, and the change of the global."""
    bad, good = row_of(report, ATTACKER), row_of(report, HONEST)
    return {
        "attack": attack,
        "variant": variant,
        "injected": injected,
        "attacker_weight": bad.weight if bad else 0.0,
        "attacker_accepted": bool(bad and bad.accepted),
        "attacker_clipped": bool(bad and bad.clipped),
        "reason": (bad.reason if bad else report.reason) or "—",
        "honest_weight": good.weight if good else 0.0,
        "round": report.status if report.status != "not committed" else f"not committed: {report.reason}",
        "commit_gate": report.reason if report.status == "refused" else "passed",
        "macro_accuracy_change": report.measure.macro_accuracy - reference.measure.macro_accuracy,
        "normalised_reward_change": report.measure.normalised_reward - reference.measure.normalised_reward,
        "max_abs_theta": report.measure.max_abs_theta,
        "honest_max_abs_theta": reference.measure.max_abs_theta,
        "next_round": next_round,
    }
