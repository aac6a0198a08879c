"""The convergence benchmark's results page: seed statistics, verdicts against the goals, plots."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench import scenarios

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


def _goal_lines(scenario: str, arms: dict[str, dict[int, dict[str, Any]]], seeds: list[int]) -> list[str]:
    fg = _macro(arms, "fgrpo", seeds)
    lines = []
    v, m, sd = verdict(fg, _macro(arms, "fedavg", seeds))
    met = "met" if m >= GOAL_MARGIN else "not met"
    lines.append(
        f"- FGRPO − FedAvg: {m:+.3f} ± {sd:.3f} macro accuracy ({v}); goal +{GOAL_MARGIN:.2f}: {met}."
    )
    if "central" in arms:
        central = _macro(arms, "central", seeds)
        ratio = float(np.mean(fg)) / max(1e-9, float(np.mean(central)))
        met = "met" if ratio >= GOAL_CENTRAL else "not met"
        lines.append(f"- FGRPO / centralised: {ratio:.3f}; goal ≥ {GOAL_CENTRAL}: {met}.")
    v, m, sd = verdict(_macro(arms, "reward", seeds), fg)
    lines.append(f"- reward − FGRPO: {m:+.3f} ± {sd:.3f} ({v} for reward; goal: reward worse than FGRPO).")
    if "fgrpo-probe" in arms:
        v, m, sd = verdict(_macro(arms, "fgrpo-probe", seeds), fg)
        lines.append(f"- FGRPO server_probe − FGRPO reported: {m:+.3f} ± {sd:.3f} ({v}).")
    return lines


def _summary_table(table: dict[str, Any], seeds: list[int]) -> list[str]:
    """One line per scenario: the three goals, stated plainly."""
    lines = [
        "| scenario | FGRPO macro | FedAvg macro | FGRPO − FedAvg (goal ≥ +0.03) | FGRPO / centralised (goal ≥ 0.95) "
        "| reward − FGRPO (goal < 0) |",
        "|---|---|---|---|---|---|",
    ]
    for scenario, arms in table.items():
        fg, fa = _macro(arms, "fgrpo", seeds), _macro(arms, "fedavg", seeds)
        v1, m1, sd1 = verdict(fg, fa)
        ratio = (
            float(np.mean(fg)) / max(1e-9, float(np.mean(_macro(arms, "central", seeds))))
            if "central" in arms
            else float("nan")
        )
        v2, m2, sd2 = verdict(_macro(arms, "reward", seeds), fg)
        lines.append(
            f"| {scenario} | {_ms(fg)} | {_ms(fa)} | {m1:+.3f} ± {sd1:.3f}: {v1}, goal {'met' if m1 >= GOAL_MARGIN else 'not met'} "
            f"| {ratio:.2f}: {'met' if ratio >= GOAL_CENTRAL else 'not met'} "
            f"| {m2:+.3f} ± {sd2:.3f}: {'met' if v2 == 'loss' else 'not met'} ({v2} for reward) |"
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


def _plots(table: dict[str, Any], seeds: list[int], img_dir: Path, tag: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    names = list(table)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, scenario in zip(axes[0], names, strict=True):
        for arm, by_seed in table[scenario].items():
            if ":" in arm:
                continue
            curves = np.asarray(
                [
                    [by_seed[s]["initial"]["macro_accuracy"]]
                    + [r["macro_accuracy"] for r in by_seed[s]["rounds"]]
                    for s in seeds
                ]
            )
            x = np.arange(curves.shape[1])
            ax.plot(x, curves.mean(0), marker="o", label=arm)
            ax.fill_between(x, curves.mean(0) - curves.std(0), curves.mean(0) + curves.std(0), alpha=0.12)
        ax.set_title(scenario)
        ax.set_xticks(x)  # rounds are whole numbers
        ax.set_xlabel("round")
        ax.set_ylabel("macro accuracy")
        ax.legend(fontsize=6)
    fig.tight_layout()
    acc = img_dir / f"convergence-{tag}-accuracy.png"
    fig.savefig(acc, dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 5.6), squeeze=False)
    for col, scenario in enumerate(names):
        by_seed = table[scenario]["fgrpo"]
        owners = sorted({r["client_id"] for r in by_seed[seeds[0]]["rounds"][0]["rows"]})
        rounds = np.arange(1, len(by_seed[seeds[0]]["rounds"]) + 1)
        for owner in owners:
            for row, field in ((0, "gain"), (1, "weight")):
                series = np.asarray(
                    [
                        [
                            next(r[field] for r in rnd["rows"] if r["client_id"] == owner)
                            for rnd in by_seed[s]["rounds"]
                        ]
                        for s in seeds
                    ]
                )
                axes[row][col].plot(rounds, series.mean(0), marker="o", label=owner)
                axes[row][col].set_ylabel(f"FGRPO {field}")
        axes[0][col].set_title(scenario)
        for row in (0, 1):
            axes[row][col].set_xticks(rounds)
        axes[1][col].set_xlabel("round")
        axes[0][col].legend(fontsize=7)
    fig.tight_layout()
    gw = img_dir / f"convergence-{tag}-fgrpo-gains-weights.png"
    fig.savefig(gw, dpi=90)
    plt.close(fig)
    return [acc.name, gw.name]


def default_page(model: str) -> Path:
    """docs/results.md for the tiny model, docs/results-<model>.md for the others."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    return docs / ("results.md" if model == "tiny" else f"results-{model}.md")


def write_page(data: dict[str, Any], page: Path, json_path: Path) -> Path:
    """docs/results.md (or ``page``): every table, the goals and the plots of one benchmark run."""
    table = _runs(data)
    seeds = data["seeds"]
    tag = f"{data['model']}{'-quick' if data['quick'] else ''}"
    images = _plots(table, seeds, page.parent / "img", tag)
    rel_json = os.path.relpath(json_path, page.parent)
    b = data["budget"]
    chosen = b.get("chosen") or scenarios.BUDGETS["quick" if data["quick"] else data["model"]].chosen
    # Runs of later commands merged into this JSON (bench/merge_results.py): more arms or scenarios.
    added = data.get("added_runs", [])
    added_runs = {(s, arm) for extra in added for s in extra["scenarios"] for arm in extra["arms"]}
    first_runs = [r for r in data["runs"] if (r["scenario"], r["arm"]) not in added_runs]
    first_scenarios = [s for s in data["scenarios"] if any(r["scenario"] == s for r in first_runs)]
    flags = (
        f"{' --quick' if data['quick'] else ''}"
        f"{' --scenarios ' + ' '.join(first_scenarios) if first_scenarios != list(scenarios.SCENARIOS) else ''}"
        f"{' --ablation' if any(':' in r['arm'] for r in first_runs) else ''}"
    )
    later = "".join(
        f" Added later: `{extra['flags']}` "
        f"({extra['wall_time_s'] / 60:.1f} min; {extra['note']})."
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
        f"{chosen}. FGRPO's constants are SPEC §2's defaults, not tuned.",
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
        "- Both model sizes: [tiny](results.md), [SmolLM2-135M](results-smollm2.md)",
        "- [Fault and attack suite](faults.md)",
        "",
    ]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines) + "\n")
    return page
