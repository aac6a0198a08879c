"""A self-contained HTML report of one experiment (``fgrpo report``), rendered with Jinja2.

report_data.py reads what it shows; templates/report.html.j2 lays it out; the plots are PNGs drawn
with matplotlib's Agg canvas and embedded as base64, so the file opens anywhere, offline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from fgrpo_app.report_data import ExperimentData, RegistryInfo, read_mlflow, read_store
from fgrpo_io.reports import ROUND_COLUMNS
from fgrpo_io.timing import PARTS

__all__ = ["ExperimentData", "RegistryInfo", "build_report", "read_store", "render"]


@dataclass(frozen=True)
class TableData:
    """One HTML table: the first ``text_cols`` columns are left-aligned text, the rest numbers."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    text_cols: int = 1
    row_classes: Sequence[str] | None = None


def cell(value: Any) -> str | Markup:
    if isinstance(value, bool):
        return "yes" if value else Markup("<b>no</b>")
    if isinstance(value, float):
        return f"{value + 0.0:.4g}"  # + 0.0 turns -0.0 into 0.0
    return str(value)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("fgrpo_app", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
    )
    env.filters["cell"] = cell
    return env


def _round_table(rounds: Sequence[dict[str, Any]]) -> TableData:
    """One row per client and round: SPEC §2's quantities, the delta, and the verdict."""
    pairs = [(r["round"], row) for r in rounds for row in r["rows"]]
    return TableData(
        ["round", *(title for _, title in ROUND_COLUMNS)],
        [[t, *(row.get(name, "") for name, _ in ROUND_COLUMNS)] for t, row in pairs],
        text_cols=2,
        row_classes=["" if row.get("accepted", True) else "rejected" for _, row in pairs],
    )


def _evaluation_table(rounds: Sequence[dict[str, Any]]) -> TableData:
    families = sorted({f for r in rounds for f in r["evaluation"]["families"]})
    headers = ["round", *(f"{f} accuracy" for f in families), "macro accuracy"]
    rows = []
    for r in rounds:
        fams, registry = r["evaluation"]["families"], r.get("registry") or {}
        rows.append(
            [
                r["round"],
                *(fams[f]["accuracy"] if f in fams else "" for f in families),
                r["evaluation"]["macro_accuracy"],
                registry.get("version", ""),
                registry.get("alias", ""),
            ]
        )
    return TableData([*headers, "model version", "alias at registration"], rows)


def _timings_table(rounds: Sequence[dict[str, Any]]) -> TableData | None:
    timed = [r for r in rounds if r.get("timings")]
    if not timed:
        return None
    names = [p for p in PARTS if any(p in r["timings"] for r in timed)]
    headers = ["round", *(n.removesuffix("_s").replace("_", " ") for n in names)]
    return TableData(headers, [[r["round"], *(r["timings"].get(n, 0.0) for n in names)] for r in timed])


def render(data: ExperimentData) -> str:
    """The whole report as one HTML document."""
    from fgrpo_app.report_plots import accuracy_plot, clients_plot

    rounds = data.rounds
    federated = [r for r in rounds if r["rows"]]  # round 0, the initial evaluation, has no clients
    state = data.state
    reg = data.registry
    context: dict[str, Any] = {
        "experiment": data.experiment,
        "store_uri": data.store_uri,
        "n_rounds": len([r for r in rounds if int(r["round"]) > 0]),
        "has_initial": any(int(r["round"]) == 0 for r in rounds),
        "built": time.strftime("%Y-%m-%d %H:%M:%S"),
        "notes": data.notes,
        "accuracy_png": accuracy_plot(rounds),
        "clients_png": clients_plot(federated) if federated else "",
        "evaluation": _evaluation_table(rounds),
        "round_table": _round_table(rounds),
        "state": None,
        "state_round": None if state is None else state.get("round"),
        "timings": _timings_table(rounds),
        "registry": reg,
        "registry_aliases": "",
        "registry_table": None,
        "config_source": data.config_source,
        "config": TableData(["parameter", "value"], sorted(data.config.items()), text_cols=2),
    }
    if state is not None:
        clients = state.get("clients", {})
        context["state"] = TableData(
            ["client", "baseline b_k", "scale s_k", "rounds seen"],
            [[c, h["baseline"], h["scale"], h["rounds_seen"]] for c, h in sorted(clients.items())],
        )
    if reg is not None:
        context["registry_aliases"] = (
            ", ".join(f"{a} → v{v}" for a, v in sorted(reg.aliases.items())) or "none"
        )
        context["registry_table"] = TableData(
            ["version", "round", "global macro accuracy", "aliases now", "run id"],
            [[v["version"], v["round"], v["score"], v["aliases"], v["run_id"]] for v in reg.versions],
        )
    return _environment().get_template("report.html.j2").render(context)


def build_report(
    data: ExperimentData,
    tracking_uri: str | None,
    model_name: str,
    out: Path,
    fallback_config: tuple[dict[str, str], str] | None = None,
) -> Path:
    """Add MLflow's part to ``data`` (read_store's), write the HTML file, return its path.

    MLflow is optional: when it cannot be read the report says why and shows the store's data.
    ``fallback_config`` (flattened params, where they come from) fills the config section when
    MLflow has no run of the experiment.
    """
    from fgrpo_io.tracking import TrackingError

    if tracking_uri is None:
        data.notes.append("No MLflow tracking URI given: registry and config not shown.")
    else:
        try:
            read_mlflow(data, tracking_uri, model_name)
        except TrackingError as err:
            data.notes.append(f"MLflow not read: {err}")
    if not data.config and fallback_config is not None:
        data.config, data.config_source = fallback_config
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(data), encoding="utf-8")
    return out
