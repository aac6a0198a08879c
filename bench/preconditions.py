"""What each scenario must build before it tests anything, measured on its own runs.

A benchmark whose preconditions fail tests nothing (issue 12): the `harmful` hack that never took
hold, the "nearly saturated" owner that starts at 0.16. Each check reads the runs of one scenario
(scenario -> arm -> seed -> run, as results_page builds them) and says what it measured, per seed
and on the mean over seeds; a scenario's preconditions hold when every check holds on the mean.

Read from the `local` arm (each owner alone, bench/references.py records each owner's report,
delta norm and evaluation per round): the silent owners' all-equal groups and delta norms, and
the mislabelled (or hacking) owner's own reward and its family's true accuracy. Federated −
local-only is checked for every scenario: if no federated arm beats owners training alone by
3 points, aggregation had nothing to decide and the strategies cannot be told apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Runs = dict[str, dict[int, dict[str, Any]]]  # arm -> seed -> run

SILENT_GROUPS_MIN = 0.8  # >= 80% of a silent owner's GRPO groups all-equal
SILENT_NORM_MAX = 0.1  # its delta norm <= 10% of the learners'
SATURATED_MIN = 0.8  # "nearly saturated": the big owner's family starts at >= 0.8 accuracy
SEPARATION_MIN = 0.03  # the best federated arm beats local-only by >= 3 points
FEDERATED_KINDS = ("strategy",)


@dataclass(frozen=True)
class Check:
    """One measured precondition."""

    name: str
    per_seed: list[float]  # the measured value on each evaluation seed
    threshold: float
    at_least: bool  # held when the value is >= threshold (else <=)

    def holds(self, value: float) -> bool:
        return value >= self.threshold if self.at_least else value <= self.threshold

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_seed))

    @property
    def held(self) -> bool:
        return self.holds(self.mean)

    def line(self) -> str:
        sign = "≥" if self.at_least else "≤"
        seeds = sum(self.holds(v) for v in self.per_seed)
        values = ", ".join(f"{v:.3f}" for v in self.per_seed)
        verdict = "held" if self.held else "FAILED"
        return (
            f"- {self.name}: {self.mean:.3f} (goal {sign} {self.threshold:g}; per seed {values}; "
            f"held on {seeds}/{len(self.per_seed)} seeds): **{verdict}**."
        )


def _owner_rounds(run: dict[str, Any], prefix: str) -> list[list[dict[str, Any]]]:
    """Per round, the local arm's records of the owners whose id starts with ``prefix``."""
    return [[o for o in rnd["owners"] if o["client_id"].startswith(prefix)] for rnd in run["rounds"]]


def _silent(runs: Runs, seeds: list[int]) -> list[Check]:
    groups, ratios = [], []
    for seed in seeds:
        run = runs["local"][seed]
        silent = [o for rnd in _owner_rounds(run, "silent-") for o in rnd]
        learners = [
            o for rnd in run["rounds"] for o in rnd["owners"] if not o["client_id"].startswith("silent-")
        ]
        groups.append(float(np.mean([o["all_equal_group_frac"] for o in silent])))
        learner_norm = float(np.mean([o["delta_norm"] for o in learners]))
        ratios.append(float(np.mean([o["delta_norm"] for o in silent])) / max(learner_norm, 1e-12))
    return [
        Check("silent owners' GRPO groups all-equal (local training)", groups, SILENT_GROUPS_MIN, True),
        Check("silent owners' delta norm / learners' (local training)", ratios, SILENT_NORM_MAX, False),
    ]


def _wrong_reward(prefix: str) -> Callable[[Runs, list[int]], list[Check]]:
    """The owner's own reward rises over the rounds while its family's true accuracy falls."""

    def checks(runs: Runs, seeds: list[int]) -> list[Check]:
        rises, falls = [], []
        for seed in seeds:
            run = runs["local"][seed]
            mine = [rnd[0] for rnd in _owner_rounds(run, prefix)]
            family = mine[0]["client_id"].removeprefix(prefix)
            rises.append(mine[-1]["r_post"] - mine[0]["r_pre"])
            initial = run["initial"]["families"][family]["accuracy"]
            falls.append(mine[-1]["families"][family]["accuracy"] - initial)
        who = prefix.rstrip("-")
        return [
            Check(f"{who} owner's own reward, last round − first (local training)", rises, 1e-9, True),
            Check(f"{who} owner's true accuracy on its family, final − initial (local)", falls, -1e-9, False),
        ]

    return checks


def _saturated(runs: Runs, seeds: list[int]) -> list[Check]:
    values = [runs["local"][s]["initial"]["families"]["add1"]["accuracy"] for s in seeds]
    return [
        Check("big owner's family (add1) initial accuracy: nearly saturated", values, SATURATED_MIN, True)
    ]


CHECKS: dict[str, Callable[[Runs, list[int]], list[Check]]] = {
    "silent": _silent,
    "mislabelled": _wrong_reward("wrong-"),
    "harmful": _wrong_reward("hack-"),
    "unequal": _saturated,
}


def scenario_checks(scenario: str, runs: Runs, seeds: list[int]) -> list[Check]:
    """The scenario's checks (none for `disjoint` and `loud`, built by construction)."""
    if scenario not in CHECKS or "local" not in runs:
        return []
    if not all("owners" in rnd for s in seeds for rnd in runs["local"][s]["rounds"]):
        return []  # a run from before the local arm recorded its owners: not measured
    return CHECKS[scenario](runs, seeds)


def macro(runs: Runs, arm: str, seeds: list[int]) -> list[float]:
    return [float(runs[arm][s]["rounds"][-1]["macro_accuracy"]) for s in seeds]


def best_federated(runs: Runs, seeds: list[int]) -> tuple[str, float]:
    """The federated arm with the highest mean final macro accuracy, and its margin over local-only."""
    local = float(np.mean(macro(runs, "local", seeds)))
    federated = [a for a, by_seed in runs.items() if by_seed[seeds[0]]["kind"] in FEDERATED_KINDS]
    best = max(federated, key=lambda a: float(np.mean(macro(runs, a, seeds))))
    return best, float(np.mean(macro(runs, best, seeds))) - local


def status(scenario: str, runs: Runs, seeds: list[int]) -> str:
    """One cell: whether the preconditions held and whether federation separates from local-only."""
    checks = scenario_checks(scenario, runs, seeds)
    parts = []
    if scenario in CHECKS and not checks:
        parts.append("not measured (this run's local arm predates the owner records)")
    elif checks:
        parts.append("held" if all(c.held for c in checks) else "**failed: tests nothing**")
    else:
        parts.append("none beyond construction")
    if "local" in runs:
        best, margin = best_federated(runs, seeds)
        if margin < SEPARATION_MIN:
            parts.append(f"best federated ({best}) − local-only {margin:+.3f}: cannot separate strategies")
        else:
            parts.append(f"best federated ({best}) − local-only {margin:+.3f}")
    return "; ".join(parts)


def lines(scenario: str, runs: Runs, seeds: list[int]) -> list[str]:
    """The scenario's preconditions, one line each, for its section of the page."""
    checks = scenario_checks(scenario, runs, seeds)
    missing = "- Not measured: this run's local arm predates the owner records the checks read."
    none = "- No measured precondition (the scenario holds by construction)."
    out = [c.line() for c in checks] or [missing if scenario in CHECKS else none]
    if "local" in runs:
        best, margin = best_federated(runs, seeds)
        met = (
            "met"
            if margin >= SEPARATION_MIN
            else "NOT met: this scenario cannot separate strategies at this size"
        )
        out.append(
            f"- Best federated arm ({best}) − local-only: {margin:+.3f} macro accuracy (goal ≥ +0.03): {met}."
        )
    return out
