"""MLflow tracking helpers (SPEC §6), called by the Prefect tasks; the registry is `registry.py`.

One parent run per fgrpo experiment, one nested run per round. Per-client quantities go on the
parent run as one metric series per client with step = round; the round run gets the same values
at step 0 plus the round table.

Every call goes through an `MlflowClient` with an explicit tracking and registry URI, never the
global fluent state. Failures become `TrackingError` naming the URI and what to check.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from fgrpo_core.config import ExperimentConfig, TrackingSettings
from fgrpo_core.errors import FgrpoError

PARAM_VALUE_LIMIT = 6000  # MLflow rejects longer parameter values
TRUNCATION_MARKER = "...[truncated]"
MLFLOW_EXPERIMENT = "fgrpo"  # legacy shared experiment; passed to start_experiment_run: see there
EXPERIMENT_TAG = "fgrpo.experiment"
ROLE_TAG = "fgrpo.role"
ROUND_TAG = "fgrpo.round"
ROUND_LOGGED_TAG = "fgrpo.round_logged"
PARENT_TAG = "mlflow.parentRunId"
SCORE_TAG = "global_macro_accuracy"
METRIC_BATCH, PARAM_BATCH = 1000, 100  # MLflow's log_batch limits per call
# Bounded HTTP retries: MLflow's defaults (7 retries, backoff factor 2, timeout 120 s) make a
# call to a dead server hang for minutes. Applied with setdefault, so the user's values win.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class TrackingError(FgrpoError):
    """MLflow cannot be reached or refused a call; the message names the URI and what to check."""


@contextlib.contextmanager
def mlflow_errors(uri: str, action: str) -> Iterator[None]:
    try:
        yield
    except (MlflowException, requests.RequestException, OSError) as err:
        raise TrackingError(
            f"MLflow {action} failed at {uri}: {err}. Check that the tracking server is running and "
            "reachable (tracking.tracking_uri / MLFLOW_TRACKING_URI) and that its store is writable."
        ) from err


def mlflow_experiment_name(experiment: str) -> str:
    return experiment  # each fgrpo experiment (the config's name) has its own MLflow experiment


def resolve_tracking_uri(settings: TrackingSettings, output_dir: Path) -> str:
    """The configured URI, else MLFLOW_TRACKING_URI, else SQLite in the output folder."""
    if settings.tracking_uri:
        return settings.tracking_uri
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    folder = Path(output_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def flatten_config(cfg: BaseModel) -> dict[str, str]:
    """Every leaf of a (nested) pydantic model as `dotted.key -> str`, for MLflow params.

    Lists of scalars are comma-joined; lists of models (clients) are keyed by index
    (`clients.0.id`). Values beyond MLflow's 6000 characters end with a truncation marker.
    """
    flat: dict[str, str] = {}

    def visit(prefix: str, value: object) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                visit(f"{prefix}{name}.", getattr(value, name))
        elif isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
            for index, item in enumerate(value):
                visit(f"{prefix}{index}.", item)
        else:
            text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
            if len(text) > PARAM_VALUE_LIMIT:
                text = text[: PARAM_VALUE_LIMIT - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
            flat[prefix.rstrip(".")] = text

    visit("", cfg)
    return flat


def _sqlite_artifact_root(tracking_uri: str) -> Path | None:
    # With SQLite, MLflow would put artifacts under ./mlruns of the working directory; keep them
    # next to the database instead.
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"


def _check_reachable(uri: str, timeout_s: float) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    for name, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        # Any HTTP answer (even 401/404) proves the server is there; only the transport can fail.
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)
    except requests.RequestException as err:
        raise TrackingError(
            f"MLflow tracking server at {uri} is unreachable ({type(err).__name__}). Start it "
            "(`mlflow server --host 127.0.0.1 ...`) or fix tracking.tracking_uri / MLFLOW_TRACKING_URI."
        ) from err


def tracker_for(cfg: ExperimentConfig) -> Tracker:
    """The experiment's tracker (its configured or default tracking URI)."""
    return Tracker(resolve_tracking_uri(cfg.tracking, Path(cfg.output_dir)))


class Tracker:
    """One MLflow client with an explicit URI; artifacts of new experiments under `artifact_root`.

    For http(s) URIs the server is probed once (`/health`, `connect_timeout_s`) and MLflow's HTTP
    retries are bounded through HTTP_ENV_DEFAULTS (set only where the environment has no value).
    """

    def __init__(
        self, tracking_uri: str, artifact_root: Path | None = None, connect_timeout_s: float = 5.0
    ) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        _check_reachable(tracking_uri, connect_timeout_s)
        self.uri = tracking_uri
        self.artifact_root = artifact_root or _sqlite_artifact_root(tracking_uri)
        with mlflow_errors(tracking_uri, "client creation"):
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _experiment_id(self, experiment_name: str) -> str:
        existing = self.client.get_experiment_by_name(experiment_name)
        if existing is not None:
            return str(existing.experiment_id)
        location = (self.artifact_root / experiment_name).resolve().as_uri() if self.artifact_root else None
        return str(self.client.create_experiment(experiment_name, artifact_location=location))

    def start_experiment_run(
        self, experiment_name: str, run_name: str, params: dict[str, str], tags: dict[str, str]
    ) -> str:
        """Parent run id of fgrpo experiment `run_name` in MLflow experiment `experiment_name`.

        Resuming: an existing parent run with the same `fgrpo.experiment` tag (= run_name) that is
        not FINISHED (RUNNING after a crash, FAILED or KILLED) is reused and set RUNNING again; its
        params must equal `params` (a resumed experiment runs the same config).
        """
        if experiment_name == MLFLOW_EXPERIMENT:  # tasks/log.py passes it: name it after the run
            experiment_name = mlflow_experiment_name(run_name)
        with mlflow_errors(self.uri, f"start of experiment run {run_name!r}"):
            experiment_id = self._experiment_id(experiment_name)
            unfinished = self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{EXPERIMENT_TAG}` = '{run_name}' and tags.`{ROLE_TAG}` = 'experiment' "
                "and attributes.status != 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            all_tags = {**tags, EXPERIMENT_TAG: run_name, ROLE_TAG: "experiment"}
            if unfinished:
                run = unfinished[0]
                changed = sorted(k for k, v in run.data.params.items() if k in params and params[k] != v)
                if changed:
                    raise TrackingError(
                        f"cannot resume MLflow run {run.info.run_id} of {run_name!r}: params {changed} "
                        "differ from the interrupted run; finish it (status FAILED) or rename the experiment"
                    )
                self.client.update_run(run.info.run_id, status="RUNNING")
                new_params = {k: v for k, v in params.items() if k not in run.data.params}
                run_id = str(run.info.run_id)
            else:
                run_id = str(self.client.create_run(experiment_id, run_name=run_name).info.run_id)
                new_params = params
            self._log_batch(run_id, params=new_params, tags=all_tags)
            return run_id

    def start_round_run(self, parent_run_id: str, round_idx: int) -> str:
        """Nested run "round-0003" under the parent; an existing one for that round is reused."""
        with mlflow_errors(self.uri, f"start of round run {round_idx}"):
            parent = self.client.get_run(parent_run_id)
            existing = self.client.search_runs(
                [parent.info.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{ROUND_TAG}` = '{round_idx}'",
                max_results=1,
            )
            if existing:
                return str(existing[0].info.run_id)
            tags = {
                PARENT_TAG: parent_run_id,
                ROUND_TAG: str(round_idx),
                ROLE_TAG: "round",
                EXPERIMENT_TAG: parent.data.tags[EXPERIMENT_TAG],
            }
            run = self.client.create_run(
                parent.info.experiment_id, run_name=f"round-{round_idx:04d}", tags=tags
            )
            return str(run.info.run_id)

    def log_round(
        self,
        parent_run_id: str,
        round_run_id: str,
        round_idx: int,
        client_rows: list[dict[str, float | str | bool]],
        global_eval: dict[str, float],
    ) -> None:
        """Log a round: client series on the parent (step = round), the same at step 0 on the round run.

        Each row needs "client_id"; its numeric and bool fields (r_pre, r_post, sigma_diff, baseline,
        scale, gain, weight, delta_norm, delta_bytes, accepted, ...) become `client/<id>/<field>`,
        bools as 0/1; strings (a rejection reason) go to the table only. `global_eval` keys are
        metric names under "eval/" (`add1/accuracy`, `add1/mean_reward`, `macro_accuracy`).
        A round run already marked logged is skipped, so a resumed round does not log twice.
        """
        values = _round_metrics(client_rows, global_eval)
        with mlflow_errors(self.uri, f"logging of round {round_idx}"):
            if self.client.get_run(round_run_id).data.tags.get(ROUND_LOGGED_TAG) == "true":
                return
            now_ms = int(time.time() * 1000)
            self._log_metrics(parent_run_id, [Metric(k, v, now_ms, round_idx) for k, v in values.items()])
            self._log_metrics(round_run_id, [Metric(k, v, now_ms, 0) for k, v in values.items()])
            table = {"round": round_idx, "clients": client_rows, "global_eval": global_eval}
            self.client.log_text(round_run_id, json.dumps(table, indent=2), "round_table.json")
            self.client.log_text(
                round_run_id, _markdown_table(round_idx, client_rows, global_eval), "round_table.md"
            )
            self.client.set_tag(round_run_id, ROUND_LOGGED_TAG, "true")

    def log_initial_evaluation(self, parent_run_id: str, global_eval: dict[str, float]) -> None:
        """`eval/<name>` at step 0 on the parent run, once: a resumed experiment does not log it again."""
        values = _round_metrics([], global_eval)
        with mlflow_errors(self.uri, "logging of the initial evaluation"):
            history = self.client.get_metric_history(parent_run_id, "eval/macro_accuracy")
            if any(point.step == 0 for point in history):
                return
            now_ms = int(time.time() * 1000)
            self._log_metrics(parent_run_id, [Metric(k, v, now_ms, 0) for k, v in values.items()])

    def log_adapter_artifacts(self, run_id: str, folder: Path, artifact_path: str = "adapter") -> None:
        """Upload an adapter folder (adapter_config.json, adapter_model.safetensors) as artifacts."""
        if not Path(folder).is_dir() or not any(Path(folder).iterdir()):
            raise TrackingError(f"adapter folder {folder} is missing or empty; save the adapter first")
        with mlflow_errors(self.uri, f"upload of {folder} to run {run_id}"):
            self.client.log_artifacts(run_id, str(folder), artifact_path)

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run with FINISHED, FAILED or KILLED."""
        with mlflow_errors(self.uri, f"finishing run {run_id}"):
            self.client.set_terminated(run_id, status=status)

    def _log_batch(self, run_id: str, params: dict[str, str], tags: dict[str, str]) -> None:
        param_items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(param_items), PARAM_BATCH):
            self.client.log_batch(run_id, params=param_items[start : start + PARAM_BATCH])
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def _log_metrics(self, run_id: str, metrics: list[Metric]) -> None:
        for start in range(0, len(metrics), METRIC_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + METRIC_BATCH])


def _round_metrics(
    client_rows: list[dict[str, float | str | bool]], global_eval: dict[str, float]
) -> dict[str, float]:
    values: dict[str, float] = {}
    for row in client_rows:
        if "client_id" not in row:
            raise TrackingError(f"round table row without 'client_id': {sorted(row)}; add the client id")
        client_id = row["client_id"]
        for field, value in row.items():
            if field != "client_id" and isinstance(value, bool | int | float):
                values[f"client/{client_id}/{field}"] = float(value)
    for name, value in global_eval.items():
        values[f"eval/{name}"] = float(value)
    return values


def _markdown_table(
    round_idx: int, client_rows: list[dict[str, float | str | bool]], global_eval: dict[str, float]
) -> str:
    columns = list(dict.fromkeys(field for row in client_rows for field in row))

    def cell(value: float | str | bool | None) -> str:
        return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))

    lines = [f"# Round {round_idx}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in client_rows]
    lines += ["", "| global evaluation | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in global_eval.items()]
    return "\n".join(lines) + "\n"
