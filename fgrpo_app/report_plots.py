"""The report's plots: matplotlib figures drawn on the Agg canvas, returned as base64 PNGs.

No pyplot: a ``Figure`` with its own Agg canvas holds no global state and needs no display.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def accuracy_plot(rounds: Sequence[dict[str, Any]]) -> str:
    """Global accuracy per family and the macro average, per round (base64 PNG)."""
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.add_subplot()
    xs = [int(r["round"]) for r in rounds]
    families = sorted({f for r in rounds for f in r["evaluation"]["families"]})
    for family in families:
        ys = [r["evaluation"]["families"].get(family, {}).get("accuracy", float("nan")) for r in rounds]
        ax.plot(xs, ys, marker="o", label=family)
    macro = [r["evaluation"]["macro_accuracy"] for r in rounds]
    ax.plot(xs, macro, marker="s", color="black", linewidth=2.5, linestyle="--", label="macro")
    ax.set(xlabel="round", ylabel="greedy accuracy", title="Global evaluation", ylim=(-0.02, 1.02))
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncols=2)
    return _png(fig)


def clients_plot(rounds: Sequence[dict[str, Any]]) -> str:
    """FGRPO gain (grouped bars) and aggregation weight (stacked bars: a round's weights sum to 1)
    of every client, over the federated rounds only (base64 PNG).

    Bars, not lines: two owners with equal weights (0.5 / 0.5) drew one line over the other.
    """
    fig = Figure(figsize=(10, 3.4))
    ax_gain, ax_weight = fig.subplots(1, 2)
    xs = [int(r["round"]) for r in rounds]
    clients = sorted({row["client_id"] for r in rounds for row in r["rows"]})
    width = 0.8 / max(len(clients), 1)
    bottom = [0.0] * len(rounds)
    for i, client in enumerate(clients):
        rows = [next((x for x in r["rows"] if x["client_id"] == client), None) for r in rounds]
        gains = [x["gain"] if x else float("nan") for x in rows]
        weights = [x["weight"] if x else 0.0 for x in rows]
        offsets = [x - 0.4 + width * (i + 0.5) for x in xs]
        ax_gain.bar(offsets, gains, width=width, label=client, color=f"C{i}")
        ax_weight.bar(xs, weights, width=0.6, bottom=bottom, label=client, color=f"C{i}")
        bottom = [b + w for b, w in zip(bottom, weights, strict=True)]
    ax_gain.axhline(0.0, color="grey", linewidth=0.8)
    ax_gain.set(xlabel="round", ylabel="gain (dead zone applied)", title="Gain per client")
    ax_weight.set(xlabel="round", ylabel="weight", title="Aggregation weight per client", ylim=(0, 1.05))
    for ax in (ax_gain, ax_weight):
        ax.set_xticks(xs)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="small")
    return _png(fig)
