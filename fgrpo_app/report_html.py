"""A self-contained HTML report of one experiment (``fgrpo report``), from its store and MLflow.

The store gives the round results (``{prefix}/{experiment}/global/round-XXXX/result.json``, written
once by tasks/aggregate.py's commit, and round 0's ``evaluation.json``) and the last committed server state (SPEC §7); MLflow gives the config (the
parent run's params) and the registry's versions and aliases. Plots are PNGs drawn with
matplotlib's Agg canvas and embedded as base64, so the file opens anywhere, offline.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgrpo_app.report_plots import accuracy_plot, clients_plot
from fgrpo_io import layout
from fgrpo_io.reports import ROUND_COLUMNS
from fgrpo_io.store import ObjectStore, StoreError, get_json
from fgrpo_io.timing import PARTS

RESULT_FILE = "result.json"


@dataclass
class RegistryInfo:
    """A registered model's versions (version, round, score, aliases, run) and its aliases."""

    model: str
    versions: list[dict[str, str]]
    aliases: dict[str, str]


@dataclass
class ExperimentData:
    """Everything the report shows, read once."""

    experiment: str
    store_uri: str
    rounds: list[dict[str, Any]]
    state: dict[str, Any] | None
    config: dict[str, str] = field(default_factory=dict)
    config_source: str = "not available"
    registry: RegistryInfo | None = None
    notes: list[str] = field(default_factory=list)


def read_store(store: ObjectStore, prefix: str, experiment: str) -> ExperimentData:
    """Round 0's evaluation, the round results (sorted by round) and the last committed state."""
    base = layout.global_prefix(prefix, experiment)
    keys = [k for k in store.list_keys(base) if k.endswith(f"/{RESULT_FILE}")]
    initial_key = layout.initial_evaluation_key(prefix, experiment)
    if not store.exists(initial_key):
        raise StoreError(
            f"no round results of experiment {experiment!r} under {store.uri(base)}: check the "
            "experiment name, --config, or --store-root and --prefix"
        )
    initial = {"round": 0, "rows": [], "evaluation": get_json(store, initial_key)}
    rounds = [initial, *sorted((get_json(store, k) for k in keys), key=lambda r: int(r["round"]))]
    committed = layout.committed_rounds(store.list_keys(layout.state_prefix(prefix, experiment)))
    state = get_json(store, layout.state_key(prefix, experiment, committed[-1])) if committed else None
    return ExperimentData(experiment, store.uri(base), rounds, state)


def read_mlflow(data: ExperimentData, tracking_uri: str, model_name: str) -> None:
    """Add the parent run's params (the config) and the registry to ``data``."""
    sqlite_file = Path(tracking_uri.removeprefix("sqlite:///"))
    if tracking_uri.startswith("sqlite:///") and not sqlite_file.is_file():
        # Opening it would create an empty database: there is nothing to read.
        data.notes.append(f"No MLflow database at {sqlite_file}: registry and config not shown.")
        return
    from fgrpo_io.registry import get_aliases
    from fgrpo_io.tracking import EXPERIMENT_TAG, MLFLOW_EXPERIMENT, ROLE_TAG, SCORE_TAG, Tracker

    client = Tracker(tracking_uri).client
    mlflow_experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    if mlflow_experiment is not None:
        runs = client.search_runs(
            [mlflow_experiment.experiment_id],
            filter_string=f"tags.`{EXPERIMENT_TAG}` = '{data.experiment}' and tags.`{ROLE_TAG}` = 'experiment'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs:
            data.config = dict(sorted(runs[0].data.params.items()))
            data.config_source = f"MLflow run {runs[0].info.run_id} ({tracking_uri})"
    aliases = get_aliases(client, model_name)
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(version, []).append(alias)
    versions = [
        {
            "version": str(v.version),
            "round": v.tags.get("round", ""),
            "score": f"{float(v.tags[SCORE_TAG]):.4f}" if SCORE_TAG in v.tags else "",
            "aliases": ", ".join(by_version.get(str(v.version), [])),
            "run_id": str(v.run_id),
        }
        for v in client.search_model_versions(f"name = '{model_name}'")
    ]
    versions.sort(key=lambda row: int(row["version"]))
    data.registry = RegistryInfo(model_name, versions, aliases)


# --- HTML ----------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
tr.rejected td { background: #fde8e8; } code { background: #f4f4f4; padding: 0 0.2em; }
img { max-width: 100%; } .muted { color: #666; }
"""


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "<b>no</b>"
    if isinstance(value, float):
        return f"{value + 0.0:.4g}"  # + 0.0 turns -0.0 into 0.0
    return html.escape(str(value))


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    text_cols: int = 1,
    row_classes: Sequence[str] | None = None,
) -> str:
    """An HTML table; the first ``text_cols`` columns are left-aligned text, the rest numbers."""

    def align(i: int) -> str:
        return ' class="text"' if i < text_cols else ""

    head = "".join(f"<th{align(i)}>{html.escape(h)}</th>" for i, h in enumerate(headers))
    classes = row_classes or [""] * len(rows)
    body = [
        (f'<tr class="{cls}">' if cls else "<tr>")
        + "".join(f"<td{align(i)}>{_cell(v)}</td>" for i, v in enumerate(row))
        + "</tr>"
        for row, cls in zip(rows, classes, strict=True)
    ]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _round_table(rounds: Sequence[dict[str, Any]]) -> str:
    """One row per client and round: SPEC §2's quantities, the delta, and the verdict."""
    headers = ["round", *(title for _, title in ROUND_COLUMNS)]
    pairs = [(r["round"], row) for r in rounds for row in r["rows"]]
    rows = [[t, *(row.get(name, "") for name, _ in ROUND_COLUMNS)] for t, row in pairs]
    classes = ["" if row.get("accepted", True) else "rejected" for _, row in pairs]
    return _table(headers, rows, text_cols=2, row_classes=classes)


def _evaluation_table(rounds: Sequence[dict[str, Any]]) -> str:
    families = sorted({f for r in rounds for f in r["evaluation"]["families"]})
    headers = ["round", *(f"{f} accuracy" for f in families), "macro accuracy", "model version", "alias"]
    rows = []
    for r in rounds:
        fams = r["evaluation"]["families"]
        registry = r.get("registry") or {}
        rows.append(
            [
                r["round"],
                *(fams[f]["accuracy"] if f in fams else "" for f in families),
                r["evaluation"]["macro_accuracy"],
                registry.get("version", ""),
                registry.get("alias", ""),
            ]
        )
    return _table(headers, rows)


def render(data: ExperimentData) -> str:
    """The whole report as one HTML document."""
    rounds = data.rounds
    parts = [
        f"<h1>fgrpo experiment <code>{html.escape(data.experiment)}</code></h1>",
        f'<p class="muted">Store: <code>{html.escape(data.store_uri)}</code> · {len(rounds)} round '
        f"report(s) · built {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
        *(f'<p class="muted">{html.escape(note)}</p>' for note in data.notes),
        "<h2>Global evaluation</h2>",
        f'<img alt="global accuracy per family and macro, per round" src="data:image/png;base64,{accuracy_plot(rounds)}">',
        _evaluation_table(rounds),
        "<h2>Clients: gains and weights</h2>",
        f'<img alt="FGRPO gain and weight per client, per round" src="data:image/png;base64,{clients_plot(rounds)}">',
        "<h2>Round table</h2>",
        _round_table(rounds),
    ]
    if data.state is not None:
        clients = data.state.get("clients", {})
        parts += [
            f"<h2>Server state after round {data.state.get('round')}</h2>",
            _table(
                ["client", "baseline b_k", "scale s_k", "rounds seen"],
                [[c, h["baseline"], h["scale"], h["rounds_seen"]] for c, h in sorted(clients.items())],
            ),
        ]
    timed = [r for r in rounds if r.get("timings")]
    if timed:
        names = [p for p in PARTS if any(p in r["timings"] for r in timed)]
        headers = ["round", *(n.removesuffix("_s").replace("_", " ") for n in names)]
        parts += [
            "<h2>Time per round (seconds, measured inside the tasks)</h2>",
            _table(headers, [[r["round"], *(r["timings"].get(n, 0.0) for n in names)] for r in timed]),
        ]
    parts.append("<h2>Model registry</h2>")
    if data.registry is None:
        parts.append('<p class="muted">MLflow was not read.</p>')
    else:
        reg = data.registry
        aliases = ", ".join(f"{a} → v{v}" for a, v in sorted(reg.aliases.items())) or "none"
        parts += [
            f"<p>Registered model <code>{html.escape(reg.model)}</code>; aliases: {html.escape(aliases)}</p>",
            _table(
                ["version", "round", "global macro accuracy", "aliases", "run id"],
                [[v["version"], v["round"], v["score"], v["aliases"], v["run_id"]] for v in reg.versions],
            ),
        ]
    parts += [
        "<h2>Config</h2>",
        f'<p class="muted">From {html.escape(data.config_source)}.</p>',
        _table(["parameter", "value"], sorted(data.config.items()), text_cols=2),
    ]
    body = "\n".join(parts)
    title = html.escape(f"fgrpo report: {data.experiment}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def build_report(
    store: ObjectStore,
    prefix: str,
    experiment: str,
    tracking_uri: str | None,
    model_name: str,
    out: Path,
    fallback_config: tuple[dict[str, str], str] | None = None,
) -> Path:
    """Read the store and MLflow, write the HTML file, return its path.

    MLflow is optional: when it cannot be read the report says why and shows the store's data.
    ``fallback_config`` (flattened params, where they come from) fills the config section when
    MLflow has no run of the experiment.
    """
    from fgrpo_io.tracking import TrackingError

    data = read_store(store, prefix, experiment)
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
