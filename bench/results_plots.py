"""The convergence page's plots: macro accuracy per round per arm, FGRPO's gains and weights per owner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plots(table: dict[str, Any], seeds: list[int], img_dir: Path, tag: str) -> list[str]:
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
