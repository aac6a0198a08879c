"""The convergence benchmark's results page: seed statistics, verdicts against the goals, plots."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench import preconditions, scenarios
from bench.results_plots import plots

GOAL_MARGIN = 0.03  # FGRPO >= FedAvg + 3 points of macro accuracy
GOAL_CENTRAL = 0.95  # FGRPO >= 0.95 x centralised


def _runs(data: dict[str, Any]) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """scenario -> arm -> seed -> run."""
    table: dict[str, dict[str, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for run in data["runs"]:
        table[run["scenario"]][run["arm"]][run["seed"]] = run
    return table


def _ms(values: list[float]) -> str:
    arr = np.asarray(values, dtype=np.float64)
    return f"{arr.mean():.3f} ± {arr.std(ddof=1) if len(arr) > 1 else 0.0:.3f}"


def _final(run: dict[str, Any]) -> dict[str, Any]:
    return dict(run["rounds"][-1])


def verdict(a: list[float], b: list[float]) -> tuple[str, float, float]:
    """Paired comparison of a - b over seeds: win or loss beyond one sd of the differences, else tie."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean = float(diff.mean())
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    if mean > sd:
        return "win", mean, sd
    if mean < -sd:
        return "loss", mean, sd
    return "tie", mean, sd


def _scenario_table(scenario: str, arms: dict[str, dict[int, dict[str, Any]]], seeds: list[int]) -> list[str]:
    first = next(iter(arms.values()))[seeds[0]]
    families = sorted(first["rounds"][-1]["families"])
    head = ["arm", "macro acc", *[f"{f} acc" for f in families], *[f"{f} reward" for f in families], "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    init = first["initial"]
    lines.append(
        "| initial | "
        + " | ".join(
            [f"{init['macro_accuracy']:.3f}"]
            + [f"{init['families'][f]['accuracy']:.3f}" for f in families]
            + [f"{init['families'][f]['mean_reward']:.3f}" for f in families]
            + [""]
        )
        + " |"
    )
    for arm, by_seed in arms.items():
        finals = [_final(by_seed[s]) for s in seeds]
        cells = [_ms([f["macro_accuracy"] for f in finals])]
        cells += [_ms([f["families"][fam]["accuracy"] for f in finals]) for fam in families]
        cells += [_ms([f["families"][fam]["mean_reward"] for f in finals]) for fam in families]
        cells.append(f"{np.mean([by_seed[s]['wall_time_s'] for s in seeds]):.0f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _macro(arms: dict[str, dict[int, dict[str, Any]]], arm: str, seeds: list[int]) -> list[float]:
    return [_final(arms[arm][s])["macro_accuracy"] for s in seeds]


def _paired_line(label: str, arms: dict[str, Any], a: str, b: str, seeds: list[int]) -> str:
    v, m, sd = verdict(_macro(arms, a, seeds), _macro(arms, b, seeds))
    return f"- {label}: {m:+.3f} ± {sd:.3f} macro accuracy ({v}, paired over {len(seeds)} seeds)."


def _goal_lines(scenario: str, arms: dict[str, dict[int, dict[str, Any]]], seeds: list[int]) -> list[str]:
    fg = _macro(arms, "fgrpo", seeds)
    v, m, sd = verdict(fg, _macro(arms, "fedavg", seeds))
    met = "met" if m >= GOAL_MARGIN else "not met"
    lines = [f"- FGRPO − FedAvg: {m:+.3f} ± {sd:.3f} macro accuracy ({v}); goal +{GOAL_MARGIN:.2f}: {met}."]
    pairs = [
        ("FGRPO server_probe − FedAvg", "fgrpo-probe", "fedavg"),
        ("FGRPO server_probe − FGRPO reported", "fgrpo-probe", "fgrpo"),
        ("FGRPO (scale_start first_informative) − first_round", "fgrpo", "fgrpo:scale_start=first_round"),
        ("variant gain_n informative − FedAvg", "fgrpo:gain_n=informative", "fedavg"),
        ("variant server_probe + exclude − FedAvg", "fgrpo-probe:exclude", "fedavg"),
        ("trimmed mean − FedAvg", "trimmed_mean", "fedavg"),
        ("median − FedAvg", "median", "fedavg"),
        ("reward − FGRPO (goal: reward worse)", "reward", "fgrpo"),
        ("FGRPO − local-only", "fgrpo", "local"),
        ("FedAvg − local-only", "fedavg", "local"),
    ]
    lines += [_paired_line(label, arms, a, b, seeds) for label, a, b in pairs if a in arms and b in arms]
    if "central" in arms:
        ratio = float(np.mean(fg)) / max(1e-9, float(np.mean(_macro(arms, "central", seeds))))
        met = "met" if ratio >= GOAL_CENTRAL else "not met"
        lines.append(f"- FGRPO / centralised: {ratio:.3f}; goal ≥ {GOAL_CENTRAL}: {met}.")
    return lines


def _pair_cell(arms: dict[str, Any], a: str, b: str, seeds: list[int]) -> str:
    if a not in arms or b not in arms:
        return "not run"
    v, m, sd = verdict(_macro(arms, a, seeds), _macro(arms, b, seeds))
    return f"{m:+.3f} ± {sd:.3f}: {v}"


def _summary_table(table: dict[str, Any], seeds: list[int]) -> list[str]:
    """One line per scenario: preconditions, federated − local-only, the paired differences."""
    lines = [
        "| scenario | preconditions; best federated − local-only (goal ≥ +0.03) | FGRPO macro | FedAvg macro "
        "| FGRPO − FedAvg (goal ≥ +0.03) | FGRPO probe − FedAvg | median − FedAvg | reward − FGRPO (goal < 0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario, arms in table.items():
        lines.append(
            f"| {scenario} | {preconditions.status(scenario, arms, seeds)} | {_ms(_macro(arms, 'fgrpo', seeds))} "
            f"| {_ms(_macro(arms, 'fedavg', seeds))} | {_pair_cell(arms, 'fgrpo', 'fedavg', seeds)} "
            f"| {_pair_cell(arms, 'fgrpo-probe', 'fedavg', seeds)} | {_pair_cell(arms, 'median', 'fedavg', seeds)} "
            f"| {_pair_cell(arms, 'reward', 'fgrpo', seeds)} |"
        )
    return lines


def _weights_table(arms: dict[str, dict[int, dict[str, Any]]], seeds: list[int]) -> list[str]:
    """Mean weight, gain and delta norm per owner over rounds and seeds, per strategy arm."""
    lines = [
        "| arm | owner | mean weight | mean gain | mean delta norm | mean r_post − r_pre (as weighted) |"
    ]
    lines.append("|---|---|---|---|---|---|")
    for arm, by_seed in arms.items():
        rows = [row for s in seeds for rnd in by_seed[s]["rounds"] for row in rnd["rows"]]
        if not rows:
            continue
        for owner in sorted({r["client_id"] for r in rows}):
            mine = [r for r in rows if r["client_id"] == owner]
            lines.append(
                f"| {arm} | {owner} | {np.mean([r['weight'] for r in mine]):.3f} | "
                f"{np.mean([r['gain'] for r in mine]):+.2f} | {np.mean([r['delta_norm'] for r in mine]):.4f} | "
                f"{np.mean([r['r_post'] - r['r_pre'] for r in mine]):+.3f} |"
            )
    return lines


def _ablation_table(table: dict[str, Any], seeds: list[int]) -> list[str]:
    names = sorted({a for arms in table.values() for a in arms if a.startswith("fgrpo")})
    if not any(":" in n for n in names):
        return []
    scen = list(table)
    lines = ["| FGRPO option | " + " | ".join(scen) + " |", "|---|" + "---|" * len(scen)]
    for name in names:
        cells = [_ms(_macro(table[s], name, seeds)) if name in table[s] else "" for s in scen]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _scale_start(data: dict[str, Any]) -> str:
    """The `fgrpo` arm's scale start; runs from before the field existed used first_round."""
    if any(r["arm"] == "fgrpo:scale_start=first_round" for r in data["runs"]):
        return "first_informative"  # that ablation arm exists since first_informative became the default
    return "first_round (the default of that run)"


def default_page(model: str) -> Path:
    """docs/results.md for the tiny model, docs/results-<model>.md for the others."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    return docs / ("results.md" if model == "tiny" else f"results-{model}.md")


def write_page(data: dict[str, Any], page: Path, json_path: Path, tag: str | None = None) -> Path:
    """docs/results.md (or ``page``): every table, the goals and the plots of one benchmark run.

    ``tag`` names the plots (default: the model, '-quick'); two pages of one model need two tags.
    """
    table = _runs(data)
    seeds = data["seeds"]
    tag = tag or f"{data['model']}{'-quick' if data['quick'] else ''}"
    images = plots(table, seeds, page.parent / "img", tag)
    rel_json = os.path.relpath(json_path, page.parent)
    b = data["budget"]
    chosen = b.get("chosen") or scenarios.BUDGETS["quick" if data["quick"] else data["model"]].chosen
    # Runs of later commands merged into this JSON (bench/merge_results.py): more arms or scenarios.
    added = data.get("added_runs", [])
    added_runs = {(s, arm) for extra in added for s in extra["scenarios"] for arm in extra["arms"]}
    first_runs = [r for r in data["runs"] if (r["scenario"], r["arm"]) not in added_runs]
    first_scenarios = [s for s in data["scenarios"] if any(r["scenario"] == s for r in first_runs)]
    ablation_arms = {a.name for a in scenarios.ABLATION_ARMS} | {"fgrpo:scale_start=first_informative"}
    flags = (
        f"{' --quick' if data['quick'] else ''}"
        f"{' --scenarios ' + ' '.join(first_scenarios) if first_scenarios != list(scenarios.SCENARIOS) else ''}"
        f"{' --ablation' if any(r['arm'] in ablation_arms for r in first_runs) else ''}"
    )
    later = "".join(
        f" Added later: `{extra['flags']}` ({extra['wall_time_s'] / 60:.1f} min; {extra['note']})."
        for extra in added
    )
    lines = [
        f"# Results: FGRPO against FedAvg, reward weighting and two references ({data['model']} model)",
        "",
        f"Produced by `bench/convergence.py --model {data['model']}{flags}` in "
        f"{data['wall_time_s'] / 60:.1f} min on {data['machine']['cpus']} CPUs ({data['machine']['workers']} worker "
        f"processes); raw numbers: [`{json_path.name}`]({rel_json}).{later}",
        f"Seeds {seeds} (evaluation); the budget ({b['rounds']} rounds × {b['local_steps']} local GRPO steps, "
        f"{b['n_train']} training prompts per owner, {b['eval_per_family']} evaluation prompts per family): "
        f"{chosen}. FGRPO's constants are SPEC §2's defaults (`fgrpo` arm: scale_start {_scale_start(data)}), "
        f"not tuned; tuning seed {data.get('tuning_seed', 0)} is never an evaluation seed.",
        "Cells are mean ± sample standard deviation over seeds after the last round; accuracy is greedy exact "
        "match on the global held-out set; rewards are each family's own reward. A verdict is a paired "
        "comparison over seeds: win or loss when the mean difference exceeds one standard deviation of the "
        "paired differences, else tie.",
        "",
        f"![macro accuracy per round](img/{images[0]})",
        "",
        f"![FGRPO gains and weights per owner](img/{images[1]})",
        "",
    ]
    lines += ["## Summary", "", *_summary_table(table, seeds), ""]
    # Hand-written reading of the numbers, kept apart from the generated tables.
    notes = json_path.parent / f"{json_path.stem}-notes.md"
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    for scenario, arms in table.items():
        lines += [
            f"## {scenario}",
            "",
            *_scenario_table(scenario, arms, seeds),
            "",
            "Preconditions (bench/preconditions.py):",
            "",
            *preconditions.lines(scenario, arms, seeds),
            "",
            *_goal_lines(scenario, arms, seeds),
        ]
        lines += [
            "",
            "Weights, gains and delta norms (mean over rounds and seeds):",
            "",
            *_weights_table(arms, seeds),
            "",
        ]
    ablation = _ablation_table(table, seeds)
    if ablation:
        lines += ["## Ablation of FGRPO's options (final macro accuracy)", "", *ablation, ""]
    lines += [
        "## Other measurements",
        "",
        "- [Orchestration overhead](../bench/results/overhead.md) (`bench/overhead.py`)",
        "- [Communication and aggregation throughput](../bench/results/comm.md) (`bench/comm.py`)",
        "- [Distributed against embedded](../bench/results/distributed.md) (`bench/distributed.py`)",
        "- Client trainer step time: `bench/results/step-time-*.json` (`bench/step_time.py`)",
        "- [The budget of `make tiny`](../bench/results/tiny-budget.md) (`configs/tiny.yaml`: 12 runs, 3 seeds)",
        "- Both model sizes: [tiny](results.md), [SmolLM2-135M](results-smollm2.md); the four earlier tiny "
        "scenarios: [5 seeds](results-tiny-four-scenarios.md), [3 seeds with the ablation](results-tiny-four-scenarios-ablation-3seeds.md)",
        "- [Fault and attack suite](faults.md)",
        "",
    ]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines) + "\n")
    return page
