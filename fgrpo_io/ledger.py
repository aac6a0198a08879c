"""What of an experiment is committed, and what is left to do: the one place that decides resume.

The store is the record of the federation: theta_0 and state 0 mean "initialised"; a round is
committed once its state file exists (written after its result, SPEC §5); an owner has delivered
once its manifest exists. MLflow is the record of tracking and promotion: a round is finished
once its nested run is marked logged and its model version exists. Rounds run in order, so only
the last committed round can be unfinished; every resume path (the experiment flow, the round
flow, the client, logging, registration) asks this module and nothing else.
"""

from __future__ import annotations

from mlflow.entities import Run

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import FgrpoError
from fgrpo_core.manifest import ClientManifest
from fgrpo_core.types import EvalSummary, RoundResult
from fgrpo_io import exchange, layout
from fgrpo_io.registry import registered_name, round_version
from fgrpo_io.store import ObjectStore, get_json, make_store
from fgrpo_io.timing import TimedStore
from fgrpo_io.tracking import Tracker, tracker_for


class Ledger:
    """Answers resume questions for one experiment from its store (and MLflow when tracking)."""

    def __init__(self, cfg: ExperimentConfig, store: ObjectStore | None = None) -> None:
        self.cfg = cfg
        self.store: ObjectStore = store if store is not None else TimedStore(make_store(cfg.store))
        self.ident = exchange.identity(cfg)
        self._tracker: Tracker | None = None

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = tracker_for(self.cfg)
        return self._tracker

    # --- the store: the federation's record ---------------------------------------------------

    def committed_rounds(self) -> list[int]:
        keys = self.store.list_keys(layout.state_prefix(self.ident.prefix, self.ident.experiment))
        return layout.committed_rounds(keys)

    def last_committed(self) -> int | None:
        """The last committed round (0 right after initialisation), None before it."""
        rounds = self.committed_rounds()
        return rounds[-1] if rounds else None

    def initialised(self) -> bool:
        return self.last_committed() is not None

    def committed(self, t: int) -> bool:
        return self.store.exists(layout.state_key(self.ident.prefix, self.ident.experiment, t))

    def result(self, t: int) -> RoundResult | None:
        """Round t's stored result if round t is committed."""
        return exchange.read_round_result(self.store, self.ident, t) if self.committed(t) else None

    def delivered(self, t: int, client_id: str) -> ClientManifest | None:
        """Owner ``client_id``'s manifest for round t, None when it has not delivered yet."""
        key = layout.client_manifest_key(self.ident.prefix, self.ident.experiment, client_id, t)
        return ClientManifest.model_validate(get_json(self.store, key)) if self.store.exists(key) else None

    def initial_evaluation(self) -> EvalSummary | None:
        """theta_0's stored evaluation; None when it has not been evaluated yet."""
        key = layout.initial_evaluation_key(self.ident.prefix, self.ident.experiment)
        return EvalSummary.model_validate(get_json(self.store, key)) if self.store.exists(key) else None

    # --- MLflow: tracking and promotion -------------------------------------------------------

    def parent_run_to_resume(self, mlflow_experiment: str) -> Run | None:
        """The experiment's unfinished parent run (an interrupted invocation), if any."""
        return self.tracker.unfinished_parent_run(mlflow_experiment, self.cfg.name)

    def initial_evaluation_logged(self, parent_run_id: str) -> bool:
        return self.tracker.initial_evaluation_logged(parent_run_id)

    def round_version(self, round_run_id: str, t: int) -> str | None:
        """The model version round t registered from its round run, if any."""
        return round_version(self.tracker.client, registered_name(self.cfg), round_run_id, t)

    def first_round_to_run(self, parent_run_id: str | None) -> int:
        """The first committed round whose MLflow record (log or version) is missing, else the next.

        A round is recorded alongside the next one, so more than the last committed round may lack
        its record: rounds are checked from the last down to the first one that has it.
        """
        last = self.last_committed() or 0
        if parent_run_id is None:
            return last + 1
        first = last + 1
        for t in range(last, 0, -1):
            if self._recorded(t, parent_run_id):
                break
            first = t
        return first

    def _recorded(self, t: int, parent_run_id: str) -> bool:
        result = self.result(t)
        # Logged under this parent run, or under an earlier one that finished (a new parent then).
        found = self.tracker.round_run(parent_run_id, t, any_parent=True)
        if result is None or found is None or not found[1]:
            return False
        # A refused or rolled-back round registers nothing.
        return result.status != "committed" or self.round_version(found[0], t) is not None

    def head_evaluation(self, t: int) -> EvalSummary:
        """The evaluation of the head before round t: the last committed round's, else theta_0's."""
        for s in range(t - 1, 0, -1):
            result = self.result(s)
            # A rolled-back round carries the evaluation of the global it restored.
            if result is not None and result.status in ("committed", "rolled_back"):
                return result.evaluation
        initial = self.initial_evaluation()
        if initial is None:
            raise FgrpoError(f"{self.cfg.name}: theta_0 has no stored evaluation; run the experiment flow")
        return initial
