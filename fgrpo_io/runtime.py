"""Process-local resources of a worker: loaded base models and the progress display hook.

Loading a base model costs seconds (SmolLM2: ~16 s the first time, then a cached folder), so a
worker keeps the models it loaded and lends each to one task at a time: a PeftModel holds one
adapter, and two tasks sharing it would overwrite each other's weights.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.models import ModelBundle, load_bundle
from fgrpo_io import timing

# (round, client id, step, max steps, latest reward)
ProgressHook = Callable[[int, str, int, int, float], None]
# (event kind, its fields): what a live view shows besides training steps; kinds below.
EventHook = Callable[[str, dict[str, Any]], None]
# A round's report, as soon as it is written: fields ``report`` (round, rows with client_id,
# weight, accepted, reason; evaluation.macro_accuracy; registry version and alias).
ROUND_COMMITTED = "round_committed"
# An owner's state in a round: fields ``round``, ``client_id``, ``state`` (e.g. "evaluating").
CLIENT_STATE = "client_state"

_lock = threading.Lock()
# transformers builds a model under process-wide context managers (meta device, default dtype):
# two threads loading at once break each other's load ("Cannot copy out of meta tensor").
_load_lock = threading.Lock()
_idle: dict[str, list[ModelBundle]] = {}
# The adapter's PEFT config per bundle key, kept at load: writing an adapter folder needs only it,
# not a bundle that training may be holding (a borrow then would load another model).
_adapter_configs: dict[str, Any] = {}
# Base-model loads in this process (a warm owner must load once per experiment: it is counted).
_loads = 0
_progress: ProgressHook | None = None
_events: EventHook | None = None


def _bundle_key(cfg: ExperimentConfig) -> str:
    # Everything that changes the loaded model: its settings, the adapter's shape, the device,
    # and the families (the tiny model is warmed up on them).
    parts = [cfg.model, cfg.lora]
    return "|".join(p.model_dump_json() for p in parts) + f"|{cfg.grpo.device}|{cfg.data.families}"


@contextmanager
def borrowed_bundle(cfg: ExperimentConfig) -> Iterator[ModelBundle]:
    """A model bundle for this task alone; returned to the pool afterwards.

    A load (none when the pool has an idle bundle) counts as the running task's ``model_load_s``.
    """
    key = _bundle_key(cfg)
    with _lock:
        bundle = _idle.setdefault(key, []).pop() if _idle.get(key) else None
    if bundle is None:
        with timing.part("model_load_s"):
            bundle = _load(cfg)
    try:
        yield bundle
    finally:
        with _lock:
            _idle.setdefault(key, []).append(bundle)


def _load(cfg: ExperimentConfig) -> ModelBundle:
    global _loads
    with _load_lock:
        bundle = load_bundle(cfg)
        _loads += 1
        _adapter_configs[_bundle_key(cfg)] = bundle.model.peft_config["default"]
    # accelerate runs gc.collect() at every Trainer.train; with the ~0.7 M objects that torch,
    # transformers, TRL, Prefect and MLflow leave, each costs 0.5-0.9 s. Moving what exists now
    # (imports, the model) to the permanent generation makes those collections cheap.
    gc.collect()
    gc.freeze()
    return bundle


def preload(cfg: ExperimentConfig) -> None:
    """Load ``cfg``'s model into this process's pool now (a pre-flight), for the tasks to borrow."""
    with borrowed_bundle(cfg):
        pass


def adapter_config(cfg: ExperimentConfig) -> Any:
    """The PEFT config of ``cfg``'s adapter (``peft.LoraConfig``), from the first load of its model.

    Shared with the loaded bundles: read it, do not change it (``save_adapter_folder`` copies it).
    """
    key = _bundle_key(cfg)
    if key not in _adapter_configs:
        preload(cfg)
    return _adapter_configs[key]


def model_loads() -> int:
    """How many base models this process has loaded so far."""
    return _loads


def clear_bundles() -> None:
    with _lock:
        _idle.clear()


def set_progress_hook(hook: ProgressHook | None) -> None:
    global _progress
    _progress = hook


def report_progress(round_idx: int, client_id: str, step: int, total: int, reward: float) -> None:
    if _progress is not None:
        _progress(round_idx, client_id, step, total, reward)


def set_event_hook(hook: EventHook | None) -> None:
    global _events
    _events = hook


def report_event(kind: str, **fields: Any) -> None:
    """Tell the live view (if any) what happened; never fails the caller's work."""
    if _events is None:
        return
    try:
        _events(kind, fields)
    except Exception:  # a display error must not fail a round; it is logged with its traceback
        logging.getLogger(__name__).exception("live view hook failed on %s", kind)


def work_dir(cfg: ExperimentConfig, *parts: str) -> Path:
    """Scratch folder of this experiment on this machine (trainer output, adapter folders)."""
    path = Path(cfg.output_dir) / cfg.name / "work"
    for p in parts:
        path = path / p
    path.mkdir(parents=True, exist_ok=True)
    return path
