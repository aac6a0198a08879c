"""bench/attacks.py's result: one JSON document with a headline, and its markdown table."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench.attack_round import Federation

# The most the global may lose to a bad owner in tests/faults/ (normalised reward, same measure).
EVAL_TOLERANCE = 0.02

COLUMNS = (
    "attack",
    "injected",
    "attacker's weight",
    "recorded reason",
    "honest owner's round",
    "Δ macro accuracy",
    "Δ normalised reward",
    "max abs θ",
    "next round",
)


def _label(row: dict[str, Any]) -> str:
    return f"{row['attack']} ({row['variant']})"


def headline(rows: list[dict[str, Any]], refusals: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers a reader wants first (the control rows, bounds or cap off, are left out of them)."""
    attacks = [r for r in rows if not r.get("control")]
    heaviest = max(attacks, key=lambda r: r["attacker_weight"])
    control = next((r for r in rows if r.get("control") and r["variant"] == "unscreened"), None)
    cap_off = next((r for r in rows if r.get("control") and r["variant"] == "reported-cap-off"), None)
    big = next((r for r in rows if "memory" in r), None)
    out: dict[str, Any] = {
        "attacks": sorted({r["attack"] for r in [*rows, *refusals]}, key=int),
        # Each list names the rows where that outcome failed (empty: it held in every row).
        "not_refused": [_label(r) for r in refusals if r["reason"] == "NOT REFUSED"],
        "honest_round_not_committed": [_label(r) for r in attacks if r["round"] != "committed"],
        "next_round_not_committed": [
            _label(r) for r in attacks if "committed" not in r["next_round"].split(" (")[0]
        ],
        "non_finite_global": [_label(r) for r in attacks if not math.isfinite(r["max_abs_theta"])],
        "largest_attacker_weight": {"variant": heaviest["variant"], "weight": heaviest["attacker_weight"]},
        "worst_macro_accuracy_change": min(r["macro_accuracy_change"] for r in attacks),
        "worst_normalised_reward_change": min(r["normalised_reward_change"] for r in attacks),
        "max_abs_theta_committed": max(r["max_abs_theta"] for r in attacks),
        "eval_tolerance": EVAL_TOLERANCE,
        "beyond_eval_tolerance": [
            _label(r)
            for r in attacks
            if r["normalised_reward_change"] < -EVAL_TOLERANCE or math.isnan(r["normalised_reward_change"])
        ],
    }
    if control is not None:
        out["unscreened_control"] = {
            k: control[k] for k in ("max_abs_theta", "normalised_reward_change", "next_round")
        }
    if cap_off is not None:
        out["cap_off_control"] = {
            k: cap_off[k]
            for k in ("attacker_weight_per_round", "macro_accuracy_change", "normalised_reward_change")
        }
    if big is not None:
        mem = big["memory"]
        out["oversized_delta"] = {
            "blob_mib": big["blob_bytes"] / 2**20,
            "coordinator_bytes_read": mem["attacker_read"]["bytes_read"],
            "coordinator_peak_rss_added_mib": mem["attacker_read"]["peak_rss_added_bytes"] / 2**20,
            "unbounded_control_peak_rss_added_mib": mem["unbounded_control"]["peak_rss_added_bytes"] / 2**20,
        }
    return out


def result(rows: list[dict[str, Any]], refusals: list[dict[str, Any]], fed: Federation) -> dict[str, Any]:
    return {
        "headline": headline(rows, refusals),
        "setting": (
            "tiny model (tests/conftest.py tiny budget; 64 evaluation and 32 probe prompts per family), two owners: owner-a add1 (honest), owner-b mul1 "
            "(the attacker), n_train 16 each, fgrpo defaults, federation.min_clients 1 unless stated; "
            "every delivery through a local store, read as tasks/aggregate.py reads it (manifest, then "
            "aggregate_streamed loading each delta), "
            "and the commit gate (max_eval_drop None: only a non-finite global is refused)"
        ),
        "reference": (
            "the honest run: the same config and round(s) with owner-b honest (for zero-honest rows, "
            "owner-a's zero delta kept); changes are attacked minus honest, greedy, 64 prompts per family"
        ),
        "honest_theta0": fed.measure(fed.theta0).__dict__,
        "rows": rows,
        "refusals": refusals,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1_5_15": list(os.getloadavg()),
            "python": platform.python_version(),
        },
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def _cell(value: Any, limit: int = 150) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:+.4f}" if abs(value) < 1e3 else f"{value:.3g}"
    text = " ".join(str(value).split()).replace("`", "'")
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _weight(row: dict[str, Any]) -> str:
    if row["attacker_weight"] is None:
        return "—"
    per_round = row.get("attacker_weight_per_round")
    if per_round:
        return " / ".join(f"{w:.3f}" for w in per_round) + " (rounds 1 / 2)"
    shown = f"{row['attacker_weight']:.3f}"
    return shown + (", clipped" if row.get("attacker_clipped") else "")


def _names(labels: list[str]) -> str:
    return ", ".join(labels) or "none"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        label = f"{r['attack']} ({r['variant']})" + (" **control**" if r.get("control") else "")
        theta = "—" if "max_abs_theta" not in r else f"{r['max_abs_theta']:.3g}"
        change = [_cell(r["macro_accuracy_change"]), _cell(r["normalised_reward_change"])]
        gate = r.get("commit_gate", "passed")
        shown = r["round"] + ("" if gate == "passed" else f" ({gate})")
        cells = [label, _cell(r["injected"]), _weight(r), _cell(r["reason"]), _cell(shown, 200)]
        lines.append("| " + " | ".join([*cells, *change, theta, _cell(r["next_round"], 80)]) + " |")
    return "\n".join(lines)


def markdown(res: dict[str, Any]) -> str:
    h = res["headline"]
    load = ", ".join(f"{x:.2f}" for x in res["machine"]["load_avg_1_5_15"])
    parts = [
        "# Issue 11's attacks, measured on two owners",
        "",
        f"Measured {res['measured_at']} by `bench/attacks.py`; {res['machine']['cpus']} CPUs, load {load}.",
        "",
        f"Setting: {res['setting']}. Reference: {res['reference']}.",
        "",
        f"Refusals let through: {_names(h['not_refused'])}. Honest owner's round not committed: "
        f"{_names(h['honest_round_not_committed'])}. Next round not committed: "
        f"{_names(h['next_round_not_committed'])}. Non-finite global: {_names(h['non_finite_global'])}. "
        "Largest attacker "
        f"weight: {h['largest_attacker_weight']['weight']:.3f} ({h['largest_attacker_weight']['variant']}); "
        f"worst change: macro accuracy {h['worst_macro_accuracy_change']:+.4f}, normalised reward "
        f"{h['worst_normalised_reward_change']:+.4f}; largest max abs θ committed {h['max_abs_theta_committed']:.3g}. "
        f"Beyond the fault suite's tolerance ({h['eval_tolerance']} normalised reward): "
        f"{_names(h['beyond_eval_tolerance'])}. (The controls, bounds or cap off, are left out of these.)",
        "",
        table(res["rows"]),
        "",
        "## Refused before any round runs (attacker's weight —, evaluation change 0: nothing committed)",
        "",
        "| attack | injected | recorded message | measured by |",
        "| --- | --- | --- | --- |",
    ]
    for r in res["refusals"]:
        cells = [
            f"{r['attack']} ({r['variant']})",
            _cell(r["injected"]),
            _cell(r["reason"], 220),
            _cell(r["measured_by"]),
        ]
        parts.append("| " + " | ".join(cells) + " |")
    if "oversized_delta" in h:
        o = h["oversized_delta"]
        parts += [
            "",
            f"Attack 4's reads, each in a fresh process: the coordinator read {o['coordinator_bytes_read']} "
            f"bytes of the {o['blob_mib']:.0f} MiB delta and its peak RSS rose by "
            f"{o['coordinator_peak_rss_added_mib']:.1f} MiB; the unbounded read (before issue 11) "
            f"added {o['unbounded_control_peak_rss_added_mib']:.1f} MiB.",
        ]
    return "\n".join(parts) + "\n"


def write(res: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "attacks.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "attacks.md").write_text(markdown(res))
