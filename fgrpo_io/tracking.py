"""MLflow tracking helpers (SPEC §6), called by the Prefect tasks; the registry is `registry.py`.

One parent run per fgrpo experiment, one nested run per round. Per-client quantities go on the
parent run as one metric series per client with step = round; the round run gets the same values
at step 0 plus the round table.

Every call goes through an `MlflowClient` with an explicit tracking and registry URI, never the
global fluent state. Failures become `TrackingError` naming the URI and what to check.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import FgrpoError
from fgrpo_core.types import EvalSummary, RoundResult
from fgrpo_io.reports import eval_metrics, round_markdown, round_metrics
from fgrpo_io.tracking_config import resolve_tracking_uri, sqlite_artifact_root

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


@dataclass(frozen=True)
class ParentRun:
    """What a round run takes from its parent run: fixed once the parent exists."""

    run_id: str
    experiment_id: str
    experiment: str  # the fgrpo experiment (EXPERIMENT_TAG)


class RoundRun(NamedTuple):
    run_id: str
    logged: bool  # its series and tables are all written (ROUND_LOGGED_TAG)
    started: bool = False  # started by this call: nothing (no model version) refers to it yet


# (tracking URI, parent run id) -> its fixed facts: each record would otherwise read the whole
# parent run (every param and metric) to learn its experiment id (~14 ms a round on SQLite).
_PARENTS: dict[tuple[str, str], ParentRun] = {}


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
        self.artifact_root = artifact_root or sqlite_artifact_root(tracking_uri)
        with mlflow_errors(tracking_uri, "client creation"):
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _experiment_id(self, experiment_name: str) -> str:
        existing = self.client.get_experiment_by_name(experiment_name)
        if existing is not None:
            return str(existing.experiment_id)
        location = (self.artifact_root / experiment_name).resolve().as_uri() if self.artifact_root else None
        return str(self.client.create_experiment(experiment_name, artifact_location=location))

    def unfinished_parent_run(self, experiment_name: str, run_name: str) -> Run | None:
        """The newest parent run of fgrpo experiment ``run_name`` that is not FINISHED, if any."""
        with mlflow_errors(self.uri, f"search for the run of {run_name!r}"):
            existing = self.client.get_experiment_by_name(experiment_name)
            if existing is None:
                return None
            runs = self.client.search_runs(
                [existing.experiment_id],
                filter_string=f"tags.`{EXPERIMENT_TAG}` = '{run_name}' and tags.`{ROLE_TAG}` = 'experiment' "
                "and attributes.status != 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            return runs[0] if runs else None

    def start_experiment_run(
        self,
        experiment_name: str,
        run_name: str,
        params: dict[str, str],
        tags: dict[str, str],
        resume: Run | None = None,
    ) -> str:
        """Parent run id of fgrpo experiment ``run_name``: ``resume`` (set RUNNING again; its params
        must equal ``params``) or a new run in MLflow experiment ``experiment_name``."""
        with mlflow_errors(self.uri, f"start of experiment run {run_name!r}"):
            all_tags = {**tags, EXPERIMENT_TAG: run_name, ROLE_TAG: "experiment"}
            if resume is not None:
                changed = sorted(k for k, v in resume.data.params.items() if k in params and params[k] != v)
                if changed:
                    raise TrackingError(
                        f"cannot resume MLflow run {resume.info.run_id} of {run_name!r}: params {changed} "
                        "differ from the interrupted run; finish it (status FAILED) or rename the experiment"
                    )
                self.client.update_run(resume.info.run_id, status="RUNNING")
                new_params = {k: v for k, v in params.items() if k not in resume.data.params}
                run_id = str(resume.info.run_id)
            else:
                experiment_id = self._experiment_id(experiment_name)
                run_id = str(self.client.create_run(experiment_id, run_name=run_name).info.run_id)
                new_params = params
            self._log_batch(run_id, params=new_params, tags=all_tags)
            exp_id = str(resume.info.experiment_id) if resume is not None else experiment_id
            _PARENTS[(self.uri, run_id)] = ParentRun(run_id, exp_id, run_name)
            return run_id

    def _parent(self, parent_run_id: str) -> ParentRun:
        key = (self.uri, parent_run_id)
        if key not in _PARENTS:
            run = self.client.get_run(parent_run_id)
            _PARENTS[key] = ParentRun(
                parent_run_id, str(run.info.experiment_id), run.data.tags[EXPERIMENT_TAG]
            )
        return _PARENTS[key]

    def round_run(self, parent_run_id: str, round_idx: int, any_parent: bool = False) -> RoundRun | None:
        """Round ``round_idx``'s nested run under the parent, if it exists;
        with ``any_parent``, under any parent run of the same fgrpo experiment (an earlier, finished
        invocation logged it)."""
        with mlflow_errors(self.uri, f"search for round run {round_idx}"):
            return self._round_run(self._parent(parent_run_id), round_idx, any_parent)

    def open_round_run(self, parent_run_id: str, round_idx: int) -> RoundRun:
        """Round ``round_idx``'s nested run under the parent, started if there is none yet: a
        retried or resumed record finds its run instead of starting a second one."""
        with mlflow_errors(self.uri, f"start of round run {round_idx}"):
            parent = self._parent(parent_run_id)
            found = self._round_run(parent, round_idx, any_parent=False)
            return (
                found
                if found is not None
                else RoundRun(self._start_round_run(parent, round_idx), False, True)
            )

    def _round_run(self, parent: ParentRun, round_idx: int, any_parent: bool) -> RoundRun | None:
        owner = (
            f"tags.`{EXPERIMENT_TAG}` = '{parent.experiment}'"
            if any_parent
            else f"tags.`{PARENT_TAG}` = '{parent.run_id}'"
        )
        existing = self.client.search_runs(
            [parent.experiment_id],
            filter_string=f"{owner} and tags.`{ROUND_TAG}` = '{round_idx}' and tags.`{ROLE_TAG}` = 'round'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not existing:
            return None
        run = existing[0]
        return RoundRun(str(run.info.run_id), run.data.tags.get(ROUND_LOGGED_TAG) == "true")

    def _start_round_run(self, parent: ParentRun, round_idx: int) -> str:
        tags = {
            PARENT_TAG: parent.run_id,
            ROUND_TAG: str(round_idx),
            ROLE_TAG: "round",
            EXPERIMENT_TAG: parent.experiment,
        }
        run = self.client.create_run(parent.experiment_id, run_name=f"round-{round_idx:04d}", tags=tags)
        return str(run.info.run_id)

    def log_round(self, parent_run_id: str, round_run_id: str, experiment: str, result: RoundResult) -> None:
        """Log a round: client series on the parent (step = round), the same at step 0 on the
        round run, the result as JSON and its markdown table; then mark the round run logged.

        Each row's numeric and bool fields become ``client/<id>/<field>`` (bools as 0/1); the
        evaluation ``eval/<family>/accuracy``, ``eval/<family>/mean_reward``, ``eval/macro_accuracy``.
        The logged tag goes with the round run's last metrics batch, written after everything else.
        """
        values = round_metrics(result)
        t = result.round
        with mlflow_errors(self.uri, f"logging of round {t}"):
            now_ms = int(time.time() * 1000)
            self.client.log_text(round_run_id, result.model_dump_json(indent=2), "round_result.json")
            self.client.log_text(round_run_id, round_markdown(experiment, result), "round_table.md")
            self._log_metrics(parent_run_id, [Metric(k, v, now_ms, t) for k, v in values.items()])
            logged = [RunTag(ROUND_LOGGED_TAG, "true")]
            self._log_metrics(round_run_id, [Metric(k, v, now_ms, 0) for k, v in values.items()], logged)

    def initial_evaluation_logged(self, parent_run_id: str) -> bool:
        """Whether step 0 of ``eval/macro_accuracy`` is on the parent run."""
        with mlflow_errors(self.uri, "reading the initial evaluation"):
            history = self.client.get_metric_history(parent_run_id, "eval/macro_accuracy")
            return any(point.step == 0 for point in history)

    def log_initial_evaluation(self, parent_run_id: str, evaluation: EvalSummary) -> None:
        """``eval/<name>`` at step 0 on the parent run."""
        values = eval_metrics(evaluation)
        with mlflow_errors(self.uri, "logging of the initial evaluation"):
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

    def _log_metrics(self, run_id: str, metrics: list[Metric], last_tags: list[RunTag] | None = None) -> None:
        """``metrics`` in batches; ``last_tags`` with the last one (MLflow writes a batch's tags
        after its metrics)."""
        batches = [metrics[i : i + METRIC_BATCH] for i in range(0, len(metrics), METRIC_BATCH)] or [[]]
        for batch in batches[:-1]:
            self.client.log_batch(run_id, metrics=batch)
        if batches[-1] or last_tags:
            self.client.log_batch(run_id, metrics=batches[-1], tags=last_tags or [])
