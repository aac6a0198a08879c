"""MLflow model registry (SPEC §6): one model version per committed round, promoted by alias.

The alias `champion` moves only when a version beats the champion's `global_macro_accuracy` tag;
otherwise the version gets `challenger`. Errors become `tracking.TrackingError` naming the URI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException

from fgrpo_core.config import ExperimentConfig
from fgrpo_io.tracking import SCORE_TAG, TrackingError, mlflow_errors

CHAMPION, CHALLENGER = "champion", "challenger"


def registered_name(cfg: ExperimentConfig) -> str:
    """The registered model of an experiment: the configured name, else ``fgrpo-<experiment>``."""
    return cfg.tracking.registered_model_name or f"fgrpo-{cfg.name}"


@dataclass(frozen=True)
class RegistrationResult:
    """Which alias a new model version got, and the champion after the decision."""

    version: str
    alias: str
    champion_version: str
    previous_champion_score: float | None


@dataclass(frozen=True)
class AdapterIdentity:
    """What a registered adapter needs to be used: its base model and its bytes (version tags)."""

    base_model_id: str
    base_model_revision: str
    adapter_sha256: str

    def tags(self) -> dict[str, str]:
        return {
            "base_model_id": self.base_model_id,
            "base_model_revision": self.base_model_revision,
            "adapter_sha256": self.adapter_sha256,
        }


def _registered_model(client: MlflowClient, model_name: str) -> RegisteredModel | None:
    try:
        return client.get_registered_model(model_name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _champion(client: MlflowClient, model: RegisteredModel | None) -> tuple[str, float] | None:
    """The champion's version and score, from the model's aliases (None: no model or champion)."""
    if model is None or CHAMPION not in model.aliases:
        return None
    version = client.get_model_version(model.name, str(model.aliases[CHAMPION]))
    if SCORE_TAG not in version.tags:
        raise TrackingError(
            f"champion v{version.version} of {model.name!r} has no {SCORE_TAG!r} tag; tag it or "
            "delete the alias"
        )
    return str(version.version), float(version.tags[SCORE_TAG])


def round_version(client: MlflowClient, model_name: str, run_id: str, round_idx: int) -> str | None:
    """The version registered from run ``run_id`` for round ``round_idx``, if any."""
    with mlflow_errors(str(client.tracking_uri), f"search for {model_name!r} round {round_idx}"):
        # No such model: no versions (searching needs no check that it exists).
        same_round = [
            v
            for v in client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
            if v.tags.get("round") == str(round_idx)
        ]
        return str(same_round[0].version) if same_round else None


def register_round_model(
    client: MlflowClient,
    model_name: str,
    run_id: str,
    artifact_path: str,
    round_idx: int,
    experiment: str,
    strategy: str,
    score: float,
    existing_version: str | None = None,
    identity: AdapterIdentity | None = None,
) -> RegistrationResult:
    """Register runs:/<run_id>/<artifact_path> and give it `champion` or `challenger`.

    `champion` moves to the new version when there is none yet or `score` is strictly greater
    than the champion's `global_macro_accuracy` tag; otherwise the version takes `challenger`
    (moved from any older version). A new champion leaves `challenger` where it was: it marks the
    latest version that did not beat its champion. Re-registering the same run and round (a
    resumed round: ``existing_version``, found by the ledger) decides the alias again without adding
    a version. ``identity`` tags the version with its base model (id, revision) and the adapter's
    sha256, so the registry shows which base a version needs.
    """
    uri = str(client.tracking_uri)
    with mlflow_errors(uri, f"registration of {model_name!r} round {round_idx}"):
        # Read once: its aliases decide the champion below (records run one at a time, in order).
        model = _registered_model(client, model_name)
        if model is None:
            client.create_registered_model(model_name)
        if existing_version is not None:
            version = existing_version
        else:
            source = f"runs:/{run_id}/{artifact_path}"  # resolved by MLflow for SQLite and servers
            version_tags = {
                "experiment": experiment,
                "round": str(round_idx),
                "strategy": strategy,
                SCORE_TAG: repr(float(score)),
                **(identity.tags() if identity is not None else {}),
            }
            # Tags with the version: one call instead of one per tag.
            created = client.create_model_version(model_name, source=source, run_id=run_id, tags=version_tags)
            version = str(created.version)
        champion = _champion(client, model)
        if champion is None or champion[0] == version or (not math.isnan(score) and score > champion[1]):
            client.set_registered_model_alias(model_name, CHAMPION, version)
            # A resumed round whose version already is the champion has no "previous" champion.
            previous = None if champion is None or champion[0] == version else champion[1]
            return RegistrationResult(version, CHAMPION, version, previous)
        client.set_registered_model_alias(model_name, CHALLENGER, version)
        return RegistrationResult(version, CHALLENGER, champion[0], champion[1])


def get_aliases(client: MlflowClient, model_name: str) -> dict[str, str]:
    """Alias -> version of a registered model ({} when the model does not exist yet)."""
    with mlflow_errors(str(client.tracking_uri), f"reading aliases of {model_name!r}"):
        model = _registered_model(client, model_name)
        return {} if model is None else {alias: str(version) for alias, version in model.aliases.items()}


def round_version_by_tag(
    client: MlflowClient, model_name: str, experiment: str, round_idx: int
) -> str | None:
    """The version registered for round ``round_idx`` of ``experiment``, by its tags (any run)."""
    with mlflow_errors(str(client.tracking_uri), f"search for {model_name!r} round {round_idx}"):
        found = [
            v
            for v in client.search_model_versions(f"name = '{model_name}'")
            if v.tags.get("experiment") == experiment and v.tags.get("round") == str(round_idx)
        ]
        return str(found[0].version) if found else None


def record_rollback(
    client: MlflowClient, model_name: str, round_idx: int, to_round: int, version: str | None, reason: str
) -> None:
    """Point `champion` at the restored round's version (none for theta_0) and say so in a tag."""
    with mlflow_errors(str(client.tracking_uri), f"rollback of {model_name!r}"):
        model = _registered_model(client, model_name)
        if model is None:
            return
        if version is None:
            if CHAMPION in model.aliases:
                client.delete_registered_model_alias(model_name, CHAMPION)
        else:
            client.set_registered_model_alias(model_name, CHAMPION, version)
        target = f"version {version}" if version else "none (theta_0 is not registered)"
        note = f"round {round_idx} rolled back to round {to_round}; champion -> {target}"
        client.set_registered_model_tag(
            model_name, f"fgrpo.rollback.round-{round_idx:04d}", note + (f": {reason}" if reason else "")
        )
