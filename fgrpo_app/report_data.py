"""What the HTML report shows, read once: the store's round reports and state, MLflow's config
and registry. The one place that knows the stored shapes (tasks/report.py writes them).

The store gives the round results (``{prefix}/{experiment}/global/round-XXXX/result.json``; round 0
is the initial evaluation, without client rows) and the last committed server state (SPEC §7);
MLflow gives the config (the parent run's params) and the registry's versions and aliases. Only
the store is read on import-light paths: a wrong experiment name fails before MLflow loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgrpo_io import layout
from fgrpo_io.store import ObjectStore, StoreError, get_json

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
    """The round reports (sorted by round) and the last committed state of ``experiment``."""
    base = layout.global_prefix(prefix, experiment)
    keys = [k for k in store.list_keys(base) if k.endswith(f"/{RESULT_FILE}")]
    initial_key = layout.initial_evaluation_key(prefix, experiment)
    has_initial = store.exists(initial_key)
    if not keys and not has_initial:
        raise StoreError(
            f"no round results of experiment {experiment!r} under {store.uri(base)}: check the "
            "experiment name, --config, or --store-root and --prefix"
        )
    # Round 0 is theta_0's evaluation; rounds 1.. are the RoundResults written once at commit.
    initial = [{"round": 0, "rows": [], "evaluation": get_json(store, initial_key)}] if has_initial else []
    rounds = [*initial, *sorted((get_json(store, k) for k in keys), key=lambda r: int(r["round"]))]
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
    from fgrpo_io.tracking import (
        EXPERIMENT_TAG,
        MLFLOW_EXPERIMENT,
        ROLE_TAG,
        SCORE_TAG,
        Tracker,
        mlflow_experiment_name,
    )

    client = Tracker(tracking_uri).client
    # Runs before 2026-12 sit in the one shared experiment `fgrpo`.
    mlflow_experiment = client.get_experiment_by_name(
        mlflow_experiment_name(data.experiment)
    ) or client.get_experiment_by_name(MLFLOW_EXPERIMENT)
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
