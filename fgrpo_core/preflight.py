"""Pre-flight: everything an owner needs to run round 1, checked before it starts (``fgrpo check``).

``preflight(cfg)`` loads the base model once (GPU options, LoRA targets), then for each owner its
data, its reward function and a few of its examples scored by that reward, and returns every
``Problem`` found, each saying what to fix. It raises nothing for a problem it can name; an empty
list means every owner can run. Loading the model and the data reads local files only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fgrpo_core.client_rewards import client_reward
from fgrpo_core.config import ClientSpec, ExperimentConfig
from fgrpo_core.errors import FgrpoError
from fgrpo_core.evaluate import as_completions, reward_columns
from fgrpo_core.families import NO_FAMILY, Example
from fgrpo_core.gpu_options import gpu_option_problems
from fgrpo_core.partition import client_data

Kind = Literal["model", "lora", "gpu", "data", "reward"]
# Examples an owner's reward scores in pre-flight: enough to see a crash or a wrong shape.
SAMPLE = 4


@dataclass(frozen=True)
class Problem:
    """One thing that stops an owner (``client_id``) or every owner (None) from running."""

    client_id: str | None
    kind: Kind
    message: str

    def __str__(self) -> str:
        who = f"clients[{self.client_id}]" if self.client_id else "all owners"
        return f"{who} ({self.kind}): {self.message}"


def _model_problems(
    cfg: ExperimentConfig, load: Callable[[ExperimentConfig], object] | None
) -> list[Problem]:
    problems = [Problem(None, "gpu", p) for p in gpu_option_problems(cfg)]
    if problems:
        return problems
    from fgrpo_core.models import load_bundle  # loads torch and the model: only when it is checked

    try:
        (load or load_bundle)(cfg)
    except FgrpoError as err:
        kind: Kind = "lora" if "target_modules" in str(err) else "model"
        problems.append(Problem(None, kind, str(err)))
    return problems


def _sample_completions(examples: list[Example]) -> list[str]:
    """Stand-in completions: the answer where the data has one (a reward must score it), else text."""
    return [str(ex.answer) if str(ex.answer) else "42" for ex in examples]


def _reward_problems(
    spec: ClientSpec,
    fn: Callable[..., list[float | None]],
    lo_hi: tuple[float, float],
    examples: list[Example],
) -> list[Problem]:
    sample = examples[:SAMPLE]
    try:
        values = fn(
            completions=as_completions(sample, _sample_completions(sample)),
            prompts=[ex.question for ex in sample],
            **reward_columns(sample),
        )
    except Exception as err:  # the owner's own code: any failure is its problem to fix
        return [
            Problem(
                spec.id,
                "reward",
                f"the reward failed on {len(sample)} of its examples: {type(err).__name__}: {err}",
            )
        ]
    if not isinstance(values, list) or len(values) != len(sample):
        got = len(values) if isinstance(values, list) else type(values).__name__
        return [
            Problem(
                spec.id,
                "reward",
                f"the reward returned {got} for {len(sample)} completions; return a list of one float (or None) per completion",
            )
        ]
    problems = []
    for value in values:
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(float(value))):
            problems.append(
                Problem(spec.id, "reward", f"the reward returned {value!r}; return finite floats or None")
            )
            break
    outside = [v for v in values if isinstance(v, (int, float)) and not lo_hi[0] <= float(v) <= lo_hi[1]]
    if outside:
        problems.append(
            Problem(
                spec.id,
                "reward",
                f"the reward returned {outside[0]!r}, outside its range {list(lo_hi)}; fix the reward or clients[].reward_range",
            )
        )
    return problems


def client_problems(cfg: ExperimentConfig, spec: ClientSpec) -> list[Problem]:
    """One owner's data and reward problems (the model is checked once for all)."""
    try:
        data = client_data(cfg, spec.id)
    except FgrpoError as err:
        return [Problem(spec.id, "data", str(err))]
    examples = [*data.train, *data.val]
    families = sorted({e.family for e in examples})
    problems = []
    if NO_FAMILY in families and cfg.aggregation.gain_source == "server_probe":
        problems.append(
            Problem(
                spec.id,
                "data",
                "aggregation.gain_source 'server_probe' needs task families, and this owner's data has none; use gain_source 'reported'",
            )
        )
    try:
        fn, lo_hi = client_reward(spec, families)
    except FgrpoError as err:
        return [*problems, Problem(spec.id, "reward", str(err))]
    return problems + _reward_problems(spec, fn, lo_hi, examples)


def preflight(
    cfg: ExperimentConfig,
    client_id: str | None = None,
    load: Callable[[ExperimentConfig], object] | None = None,
) -> list[Problem]:
    """Every problem that stops an owner from running round 1 (all owners, or ``client_id``).

    ``load`` loads the model (default ``models.load_bundle``); a run passes its process's model
    pool, so the model the check loaded is the one round 1 trains.
    """
    specs = [c for c in cfg.clients if client_id is None or c.id == client_id]
    if not specs:
        return [
            Problem(
                client_id,
                "data",
                f"no client {client_id!r} in the config; clients are {[c.id for c in cfg.clients]}",
            )
        ]
    problems = _model_problems(cfg, load)
    for spec in specs:
        problems.extend(client_problems(cfg, spec))
    return problems
