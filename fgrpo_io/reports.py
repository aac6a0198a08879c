"""A round's result rendered once: the markdown table (Prefect artifact and MLflow) and its metrics.

Every view of a round (the Prefect UI, MLflow's round run, the CLI, the HTML report) starts from
the same ``RoundResult``; these functions are the only place it becomes text or metric names.
"""

from __future__ import annotations

from typing import Any

from fgrpo_core.owner_failure import is_permanent
from fgrpo_core.types import EvalSummary, RoundResult

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


def artifact_key(experiment: str, round_idx: int) -> str:
    """The Prefect artifact key of a round's table (lowercase letters, digits and dashes only)."""
    return f"{experiment.lower().replace('_', '-').replace('.', '-')}-round-{round_idx:04d}"


def round_markdown(experiment: str, result: RoundResult) -> str:
    """A row per client (SPEC §2 quantities), the commit decision, the global evaluation per family."""
    head = "| " + " | ".join(title for _, title in ROUND_COLUMNS) + " |"
    rule = "|" + "---|" * len(ROUND_COLUMNS)
    rows = [row.model_dump() for row in result.rows]
    body = ["| " + " | ".join(_cell(row[name]) for name, _ in ROUND_COLUMNS) + " |" for row in rows]
    families = result.evaluation.families
    evals = ["| family | accuracy | mean reward | n |", "|---|---|---|---|"] + [
        f"| {fam} | {s.accuracy:.3f} | {s.mean_reward:.3f} | {s.n} |" for fam, s in sorted(families.items())
    ]
    decision = {
        "committed": "Committed: the new global adapter is the head.",
        "refused": f"**Refused** ({result.reason}): the previous global adapter stays the head.",
        "rolled_back": f"**Rolled back** ({result.reason}): no training this round.",
    }[result.status]
    # An owner that could not run is named apart from the table: it has something to fix.
    owners = [f"- **{r.client_id}**: {r.reason}" for r in result.rows if is_permanent(r.reason)]
    failed = ["Owners that failed permanently (the round went on without them):", "", *owners, ""]
    return "\n".join(
        [
            f"# {experiment}: round {result.round}",
            "",
            head,
            rule,
            *body,
            "",
            *(failed if owners else []),
            decision,
            "",
            f"Global evaluation (macro accuracy {result.evaluation.macro_accuracy:.3f})",
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


def eval_metrics(evaluation: EvalSummary) -> dict[str, float]:
    """``eval/macro_accuracy``, ``eval/<family>/accuracy`` and ``eval/<family>/mean_reward``."""
    values = {"eval/macro_accuracy": float(evaluation.macro_accuracy)}
    for family, score in evaluation.families.items():
        values[f"eval/{family}/accuracy"] = float(score.accuracy)
        values[f"eval/{family}/mean_reward"] = float(score.mean_reward)
    return values


def round_metrics(result: RoundResult) -> dict[str, float]:
    """Per-client ``client/<id>/<field>`` (numbers and bools as 0/1), the evaluation, the decision."""
    values: dict[str, float] = {}
    for row in result.rows:
        for name, value in row.model_dump().items():
            if name != "client_id" and isinstance(value, bool | int | float):
                values[f"client/{row.client_id}/{name}"] = float(value)
    values.update(eval_metrics(result.evaluation))
    values["round/committed"] = float(result.status == "committed")
    return values
