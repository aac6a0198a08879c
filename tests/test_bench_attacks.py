"""bench/attacks.py at its smallest: the refusals, attack 4's bounded read, one round-level attack, the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bench import attacks, attacks_refusals, attacks_report
from bench.attack_round import ATTACKER, HONEST, Federation, honest_delivery, two_owner_config
from bench.attacks_oversized import _blob, oversized_delivery, probe_read
from fgrpo_core.config import parse_config
from fgrpo_core.federation import ClientUpdate
from fgrpo_core.types import ClientStats, ServerState
from fgrpo_io import exchange
from fgrpo_io.store import LocalStore

LAYOUT = {"a.lora_A.weight": torch.zeros(4, 8), "a.lora_B.weight": torch.zeros(8, 4)}


def _stats(cid: str) -> ClientStats:
    return ClientStats(
        client_id=cid,
        round=1,
        n_k=16,
        r_pre=0.2,
        r_post=0.3,
        sigma=0.4,
        sigma_diff=0.1,
        m=8,
        reward_lo=0,
        reward_hi=1,
    )


def test_every_refusal_is_refused_with_a_message_naming_what_to_fix(tmp_path: Path) -> None:
    # Prepare: the bench's two-owner config (no model is loaded for the refusals)
    raw = two_owner_config(tmp_path / "cache", tmp_path / "out")
    # Execute
    rows = attacks_refusals.run_all(raw, tmp_path / "guards")
    # Assert: one row per check; none let through; no weight, no change, nothing committed
    reasons = {r["variant"]: r["reason"] for r in rows}
    assert "NOT REFUSED" not in reasons.values()
    assert "('command', 'env' were unexpected)" in reasons["job-template"]
    assert "outside this owner's config folder" in reasons["config-path"]
    assert 'aggregation.strategy: "fgrpo" -> "fedavg"' in reasons["config-pin"]
    assert "is being run by another coordinator" in reasons["lease"]
    assert reasons["lr-inf"] == "grpo.learning_rate: Input should be a finite number"
    assert "store.prefix '../../..' has segments" in reasons["prefix"]
    assert "no `mc` on PATH" in reasons["minio-without-mc"]
    assert all(r["attacker_weight"] is None and r["normalised_reward_change"] == 0.0 for r in rows)
    assert {r["attack"] for r in rows} == {"5", "6", "7"}


@pytest.mark.parametrize(("client", "refused"), [(HONEST, False), (ATTACKER, True)])
def test_the_coordinators_read_of_an_oversized_delta_stops_at_its_manifest(
    tmp_path: Path, client: str, refused: bool
) -> None:
    # Prepare: the honest owner's delta, and a 256 KiB blob whose manifest claims 10 bytes
    cfg = parse_config(two_owner_config(tmp_path / "cache", tmp_path / "out"))
    store, ident = LocalStore(tmp_path / "store"), exchange.identity(cfg)
    exchange.write_client_delta(store, ident, 1, LAYOUT, _stats(HONEST), "float32")
    blob = _blob(256 * 1024)
    oversized_delivery(ClientUpdate(delta=LAYOUT, stats=_stats(ATTACKER)), cfg, blob, 10)(store, ident, 1)
    expected = exchange.expected_update(ident, 1, client, LAYOUT, "float32")
    spec: dict[str, Any] = {"root": str(store.root), "ident": vars(ident), "expected": vars(expected)}
    # Execute
    bounded = probe_read({**spec, "mode": "coordinator"})
    control = probe_read({**spec, "mode": "unbounded"})
    # Assert: the coordinator reads the manifest only (a few KB); the control reads the whole object
    if refused:
        assert bounded["reason"].startswith("refused: ") and "claims 10 bytes" in bounded["reason"]
        assert bounded["bytes_read"] < 16 * 1024 < len(blob) <= control["bytes_read"]
    else:
        assert bounded["reason"] == control["reason"] == "read and decoded"
        assert expected.nbytes <= bounded["bytes_read"] < expected.nbytes + 16 * 1024
    assert control["reason"] == "read and decoded"


@pytest.mark.slow
def test_a_manifest_claiming_n_k_10_400_leaves_the_honest_round_and_the_next(tmp_path: Path) -> None:
    # Prepare: the tiny model at a short warm-up (the measured run uses 200 steps)
    fed = Federation.build(tmp_path / "cache", tmp_path / "out", warmup_steps=20)
    # Execute
    row = attacks.claims(fed, "n-k", "2", 10**400, {})
    # Assert: rejected with its reason; the round is owner-a's alone, exactly as without owner-b
    cfg = fed.config("alone")
    honest = {HONEST: honest_delivery(fed.train(fed.theta0, HONEST, 1), cfg)}
    alone = fed.round(cfg, 1, fed.theta0, ServerState(), honest)
    assert row["attacker_weight"] == 0.0 and not row["attacker_accepted"]
    assert row["reason"] == "stats: client 'owner-b' reported absurd counts ['n_k'] (> 1e+09)"
    assert (row["round"], row["next_round"], row["honest_weight"]) == ("committed", "committed", 1.0)
    assert (row["max_abs_theta"], alone.status) == (alone.measure.max_abs_theta, "committed")


def _row(variant: str, weight: float, change: float, **extra: Any) -> dict[str, Any]:
    base = {
        "attack": "3",
        "variant": variant,
        "injected": "x | y",
        "attacker_weight": weight,
        "attacker_clipped": False,
        "reason": "norm clipped: `a`",
        "round": "committed",
        "macro_accuracy_change": change,
        "normalised_reward_change": change,
        "max_abs_theta": 0.09,
        "next_round": "committed",
    }
    return {**base, **extra}


def test_headline_leaves_the_control_out_and_names_rows_beyond_the_tolerance() -> None:
    # Prepare: an attack within the tolerance, one beyond it, the unscreened control, one refusal
    rows = [
        _row("clip", 0.5, -0.01),
        _row("reported", 0.904, -0.31, attacker_weight_per_round=[0.91, 0.904]),
        _row("unscreened", 0.516, -0.41, control=True, max_abs_theta=2e28),
        _row("reported-cap-off", 0.95, -0.2, control=True, attacker_weight_per_round=[0.9, 0.95]),
    ]
    refusals = [attacks_refusals.refusal("6", "lease", "second coordinator", "LeaseHeldError: held")]
    # Execute
    head = attacks_report.headline(rows, refusals)
    page = attacks_report.table(rows)
    # Assert
    assert head["largest_attacker_weight"] == {"variant": "reported", "weight": 0.904}
    assert head["beyond_eval_tolerance"] == ["3 (reported)"]
    assert head["max_abs_theta_committed"] == 0.09 and head["unscreened_control"]["max_abs_theta"] == 2e28
    assert head["cap_off_control"]["attacker_weight_per_round"] == [0.9, 0.95]
    assert head["attacks"] == ["3", "6"] and head["not_refused"] == head["non_finite_global"] == []
    assert head["honest_round_not_committed"] == head["next_round_not_committed"] == []
    assert page.splitlines()[0].startswith("| attack | injected | attacker's weight | recorded reason |")
    assert "| 3 (reported) | x \\| y | 0.910 / 0.904 (rounds 1 / 2) | norm clipped: 'a' |" in page
    assert "3 (unscreened) **control**" in page and "2e+28" in page
