"""Round reports: the table a person reads (markdown) and the record the CLI summarises (JSON)."""

from __future__ import annotations

from typing import Any

ROUND_COLUMNS = [
    ("client_id", "client"),
    ("accepted", "accepted"),
    ("n_k", "n_k"),
    ("r_pre", "r_pre"),
    ("r_post", "r_post"),
    ("baseline", "baseline"),
    ("scale", "scale"),
    ("gain", "gain"),
    ("weight", "weight"),
    ("delta_norm", "delta norm"),
    ("delta_bytes", "bytes"),
    ("reason", "note"),
]


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def round_markdown(
    experiment: str, round_idx: int, rows: list[dict[str, Any]], evaluation: dict[str, Any]
) -> str:
    """A row per client (SPEC §2 quantities), then the global evaluation per family."""
    head = "| " + " | ".join(title for _, title in ROUND_COLUMNS) + " |"
    rule = "|" + "---|" * len(ROUND_COLUMNS)
    body = ["| " + " | ".join(_cell(row.get(name, "")) for name, _ in ROUND_COLUMNS) + " |" for row in rows]
    families = evaluation.get("families", {})
    evals = ["| family | accuracy | mean reward | n |", "|---|---|---|---|"] + [
        f"| {fam} | {s['accuracy']:.3f} | {s['mean_reward']:.3f} | {s['n']} |"
        for fam, s in sorted(families.items())
    ]
    macro = evaluation.get("macro_accuracy", float("nan"))
    return "\n".join(
        [
            f"# {experiment}: round {round_idx}",
            "",
            head,
            rule,
            *body,
            "",
            f"Global evaluation (macro accuracy {macro:.3f})",
            "",
            *evals,
            "",
        ]
    )


def failed_round_markdown(experiment: str, round_idx: int, message: str) -> str:
    """A round that did not commit (below quorum): the error, which lists every client and why."""
    return "\n".join(
        [
            f"# {experiment}: round {round_idx} not committed",
            "",
            "The previous global adapter stays the current one.",
            "",
            "```",
            message,
            "```",
            "",
        ]
    )
