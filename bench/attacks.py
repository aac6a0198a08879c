"""Issue 11's attacks on a two-owner federation, measured: the attacker's weight, the recorded reason,
whether the honest owner's round and the next round commit, and the global's evaluation change
against the honest run of the same config.

    .venv/bin/python bench/attacks.py [--big-mib 256] [--model-cache .cache/fgrpo/models]

Attacks 1-4 run rounds through the store (bench/attack_round.py); 5-7 are refusals before any
round runs (bench/attacks_refusals.py). Writes bench/results/attacks.json and attacks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fgrpo_io.environment import apply_defaults  # noqa: E402

apply_defaults()  # offline Hugging Face, quiet libraries, OMP_WAIT_POLICY: before torch loads

import torch  # noqa: E402

from bench import attacks_refusals, attacks_report  # noqa: E402
from bench.attack_round import (  # noqa: E402
    ATTACKER,
    HONEST,
    Federation,
    RoundReport,
    honest_delivery,
    row,
    row_of,
)
from bench.attacks_oversized import oversized  # noqa: E402
from fgrpo_core.federation import ClientUpdate  # noqa: E402
from fgrpo_core.types import Adapter, ServerState  # noqa: E402

# The control of attack 1: every norm bound so loose that nothing is clipped (the issue's main).
UNSCREENED = {
    "max_delta_norm_ratio": 1e300,
    "max_delta_history_ratio": 1e300,
    "max_delta_global_ratio": 1e300,
}


def _scaled(delta: Adapter, factor: float) -> Adapter:
    return {k: factor * v for k, v in delta.items()}


def _lie(update: ClientUpdate, delta: Adapter | None = None, **stats: Any) -> ClientUpdate:
    return ClientUpdate(
        delta=update.delta if delta is None else delta, stats=update.stats.model_copy(update=stats)
    )


# --- 1. poison with few deltas ----------------------------------------------------------------


def poison(
    fed: Federation, variant: str, action: str, zero_honest: bool = False, screened: bool = True
) -> dict[str, Any]:
    """owner-b uploads 1e30 x its delta beside owner-a's (or beside an exactly zero one)."""
    aggregation: dict[str, Any] = {"norm_action": action, **({} if screened else UNSCREENED)}
    cfg = fed.config(f"poison-{variant}", aggregation=aggregation)
    honest_a, honest_b = fed.train(fed.theta0, HONEST, 1), fed.train(fed.theta0, ATTACKER, 1)
    if zero_honest:  # all-equal groups: zero gradient, nothing measured changes
        zero = {k: torch.zeros_like(v) for k, v in honest_a.delta.items()}
        honest_a = _lie(honest_a, zero, r_post=honest_a.stats.r_pre, sigma_diff=0.0)
    attacked = {
        HONEST: honest_delivery(honest_a, cfg),
        ATTACKER: honest_delivery(_lie(honest_b, _scaled(honest_b.delta, 1e30)), cfg),
    }
    report = fed.round(cfg, 1, fed.theta0, ServerState(), attacked)
    ref_cfg = fed.config(f"poison-{variant}-honest", aggregation=aggregation)
    honest = {HONEST: honest_delivery(honest_a, ref_cfg), ATTACKER: honest_delivery(honest_b, ref_cfg)}
    reference = fed.round(ref_cfg, 1, fed.theta0, ServerState(), honest)
    where = "beside an exactly zero honest delta" if zero_honest else "beside owner-a's delta"
    shown = f"norm_action {action}" + ("" if screened else ", every norm bound off (control)")
    injected = f"owner-b: 1e30 x its delta {where}; {shown}"
    out = row("1", variant, injected, report, reference, fed.next_round(cfg, report, 2))
    return {**out, "control": not screened}


# --- 2 and 3. numbers in a manifest -----------------------------------------------------------


def claims(
    fed: Federation, variant: str, attack: str, n_k: int, aggregation: dict[str, Any]
) -> dict[str, Any]:
    """owner-b uploads its honest delta; its manifest claims ``n_k`` training prompts (enrolled: 16)."""
    cfg = fed.config(f"claims-{variant}", aggregation=aggregation)
    honest_a, honest_b = fed.train(fed.theta0, HONEST, 1), fed.train(fed.theta0, ATTACKER, 1)
    attacked = {
        HONEST: honest_delivery(honest_a, cfg),
        ATTACKER: honest_delivery(_lie(honest_b, n_k=n_k), cfg),
    }
    report = fed.round(cfg, 1, fed.theta0, ServerState(), attacked)
    reference = fed.honest_round(
        fed.config(f"claims-{variant}-honest", aggregation=aggregation), 1, fed.theta0, ServerState()
    )
    shown = "10**400" if n_k > 10**300 else f"{n_k:.0e}"
    injected = f"owner-b's manifest: n_k = {shown} (enrolled 16), honest delta; gain_source {cfg.aggregation.gain_source}"
    return row(attack, variant, injected, report, reference, fed.next_round(cfg, report, 2))


def liar(
    fed: Federation,
    variant: str,
    aggregation: dict[str, Any],
    federation: dict[str, Any],
    control: bool = False,
) -> dict[str, Any]:
    """Rounds 1 and 2: owner-b writes -50 x its delta with r_post = 10 (the top of mul1's range);
    then round 3 with both owners honest, from the head the attack left."""
    cfg = fed.config(f"liar-{variant}", aggregation=aggregation, federation=federation)
    ref_cfg = fed.config(f"liar-{variant}-honest", aggregation=aggregation, federation=federation)
    report = reference = RoundReport("committed", "", [], fed.theta0, ServerState(), fed.measure(fed.theta0))
    weights, statuses = [], []
    for t in (1, 2):
        honest_a, honest_b = fed.train(report.head, HONEST, t), fed.train(report.head, ATTACKER, t)
        lie = _lie(honest_b, _scaled(honest_b.delta, -50.0), r_post=10.0)
        deliveries = {HONEST: honest_delivery(honest_a, cfg), ATTACKER: honest_delivery(lie, cfg)}
        report = fed.round(cfg, t, report.head, report.state, deliveries)
        statuses.append(report.status)
        reference = fed.honest_round(ref_cfg, t, reference.head, reference.state)
        bad = row_of(report, ATTACKER)
        weights.append(bad.weight if bad else 0.0)
    agg, gate = cfg.aggregation, cfg.federation.max_eval_drop
    injected = (
        f"owner-b, rounds 1 and 2: -50 x its delta, r_post = 10; gain_source {agg.gain_source}, "
        f"weight_cap {agg.weight_cap:g}, min_clients {cfg.federation.min_clients}"
        + ("" if gate is None else f", commit gate max_eval_drop {gate:g}")
    )
    out = row("3", variant, injected, report, reference, fed.next_round(cfg, report, 3))
    rounds = "committed" if statuses == ["committed"] * 2 else f"round 1 {statuses[0]}, round 2 {statuses[1]}"
    weighed = {"attacker_weight": weights[-1], "attacker_weight_per_round": weights}
    return {**out, "round": rounds, **weighed, "control": control}


def run_all(fed: Federation, big_bytes: int) -> list[dict[str, Any]]:
    """Every round-level attack of issue 11 (1-4), in the issue's order."""
    return [
        poison(fed, "reject", "reject"),
        poison(fed, "clip", "clip"),
        poison(fed, "zero-honest", "reject", zero_honest=True),
        poison(fed, "zero-honest-clip", "clip", zero_honest=True),
        poison(fed, "unscreened", "clip", screened=False),
        claims(fed, "n-k-10-400", "2", 10**400, {}),
        claims(fed, "n-k-1e6-probe", "3", 10**6, {"gain_source": "server_probe"}),
        liar(fed, "reported", {}, {}),  # library defaults: weight_cap 0.5, min_clients 1, no gate
        liar(fed, "reported-cap-off", {"weight_cap": 1.0}, {}, control=True),  # what the cap prevents
        liar(fed, "reported-gate", {}, {"max_eval_drop": 0.05}),
        liar(fed, "server-probe", {"gain_source": "server_probe"}, {}),
        oversized(fed, big_bytes),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mib", type=int, default=256, help="Size of attack 4's delta, MiB.")
    parser.add_argument("--model-cache", default=".cache/fgrpo/models", help="Tiny model cache folder.")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="Folder for attacks.json/.md.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fgrpo-attacks-") as tmp:
        fed = Federation.build(Path(args.model_cache), Path(tmp))
        rows = run_all(fed, args.big_mib * 2**20)
        refusals = attacks_refusals.run_all(fed.raw, Path(tmp) / "guards")
        result = attacks_report.result(rows, refusals, fed)
    attacks_report.write(result, Path(args.out))
    print(json.dumps(result["headline"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
