"""Greedy evaluation of the current adapter on a list of examples (client validation, global eval, probes).

Decoding is greedy (``do_sample=False``) in fixed batches with left padding, so the same model and
examples always give the same completions and rewards. A reward function may return ``None`` for a
completion it cannot score (TRL's convention); here such a completion counts as the lowest reward of
``reward_range``, so that an unparseable answer is never better than a wrong one.

The reward sees what TRL's ``GRPOTrainer`` would pass it (``reward_inputs``): the example's columns
as keyword lists, and for a prompt given as chat messages, completions as messages too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig

from fgrpo_core.config import EvaluationSettings
from fgrpo_core.errors import TaskError
from fgrpo_core.families import Example
from fgrpo_core.models import ModelBundle, example_prompt
from fgrpo_core.rewards import is_correct

RewardFn = Callable[..., list[float | None]]
_log = logging.getLogger(__name__)
# Rewards within this distance of the declared range are in it (float rounding of weighted sums).
_RANGE_TOLERANCE = 1e-6


def reward_columns(examples: Sequence[Example]) -> dict[str, list[Any]]:
    """The dataset columns a reward receives: an owner's own columns, or ``answer`` and ``family``."""
    if examples and examples[0].prompt is not None:
        return {name: [ex.columns[name] for ex in examples] for name in examples[0].columns}
    return {"answer": [ex.answer for ex in examples], "family": [ex.family for ex in examples]}


def as_completions(examples: Sequence[Example], texts: Sequence[str]) -> list[Any]:
    """Completions as TRL gives them: a message list where the prompt was a message list."""
    return [
        [{"role": "assistant", "content": text}] if isinstance(ex.prompt, list) else text
        for ex, text in zip(examples, texts, strict=True)
    ]


def count_out_of_range(rewards: Sequence[float], reward_range: tuple[float, float] | None, where: str) -> int:
    """How many rewards fall outside the declared range; warns once per call when any do."""
    if reward_range is None:
        return 0
    lo, hi = reward_range
    tol = _RANGE_TOLERANCE * max(1.0, hi - lo)
    outside = [r for r in rewards if r < lo - tol or r > hi + tol]
    if outside:
        _log.warning(
            "%s: %d of %d rewards outside the declared range [%g, %g] (e.g. %g): fix the reward "
            "or its clients[].reward_range",
            where,
            len(outside),
            len(rewards),
            lo,
            hi,
            outside[0],
        )
    return len(outside)


@dataclass(frozen=True)
class EvalResult:
    """Per-prompt rewards and exact-match correctness, in the order of the examples."""

    mean_reward: float
    rewards: list[float]
    accuracy: float
    correct: list[bool]
    n: int
    tokens_generated: int
    out_of_range: int = 0


@torch.inference_mode()
def generate_greedy(
    bundle: ModelBundle, prompts: Sequence[str], max_new_tokens: int, batch_size: int
) -> tuple[list[str], int]:
    """Greedy completions of ``prompts`` and the number of tokens generated (up to and with eos)."""
    tokenizer = bundle.tokenizer
    eos_id = tokenizer.eos_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_id,
    )
    completions: list[str] = []
    tokens = 0
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        # Same tokenisation as TRL's GRPOTrainer for string prompts (special tokens added).
        enc = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left")
        input_ids = enc["input_ids"].to(bundle.device)
        attention_mask = enc["attention_mask"].to(bundle.device)
        out = bundle.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config
        )
        new_ids = out[:, input_ids.shape[1] :].cpu()
        for row in new_ids.tolist():
            length = row.index(eos_id) + 1 if eos_id in row else len(row)
            tokens += length
            completions.append(str(tokenizer.decode(row[:length], skip_special_tokens=True)))
    return completions, tokens


def evaluate(
    bundle: ModelBundle,
    examples: Sequence[Example],
    reward_fn: RewardFn,
    settings: EvaluationSettings,
    reward_range: tuple[float, float] | None = None,
) -> EvalResult:
    """Greedy completions of ``examples`` scored by ``reward_fn`` (TRL signature).

    ``reward_range`` is needed only when the reward function may return ``None``: such completions
    count as ``reward_range[0]``, and rewards outside it are counted (``out_of_range``). Accuracy
    is exact match of the last integer for family examples, reaching ``reward_range[1]`` for an
    owner's own examples.
    """
    if not examples:
        raise TaskError("evaluate() got no examples: give every client at least one validation prompt")
    model = bundle.model
    was_training = model.training
    model.eval()
    try:
        prompts = [example_prompt(bundle, ex) for ex in examples]
        completions, tokens = generate_greedy(bundle, prompts, settings.max_new_tokens, settings.batch_size)
    finally:
        model.train(was_training)
    raw = reward_fn(
        completions=as_completions(examples, completions), prompts=prompts, **reward_columns(examples)
    )
    if len(raw) != len(examples):
        raise TaskError(f"reward function returned {len(raw)} rewards for {len(examples)} completions")
    if any(r is None for r in raw) and reward_range is None:
        raise TaskError("reward function returned None; pass reward_range so that None counts as its minimum")
    floor = reward_range[0] if reward_range is not None else 0.0
    rewards = [float(r) if r is not None else floor for r in raw]
    top = reward_range[1] - _RANGE_TOLERANCE if reward_range is not None else float("inf")
    correct = [
        reward >= top if ex.prompt is not None else bool(is_correct(c, int(ex.answer)))
        for ex, c, reward in zip(examples, completions, rewards, strict=True)
    ]
    n = len(examples)
    return EvalResult(
        mean_reward=sum(rewards) / n,
        rewards=rewards,
        accuracy=sum(correct) / n,
        correct=correct,
        n=n,
        tokens_generated=tokens,
        out_of_range=count_out_of_range(rewards, reward_range, "evaluation"),
    )
