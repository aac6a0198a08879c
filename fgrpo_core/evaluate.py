"""Greedy evaluation of the current adapter on a list of examples (client validation, global eval, probes).

Decoding is greedy (``do_sample=False``) in fixed batches with left padding, so the same model and
examples always give the same completions and rewards. A reward function may return ``None`` for a
completion it cannot score (TRL's convention); here such a completion counts as the lowest reward of
``reward_range``, so that an unparseable answer is never better than a wrong one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

from fgrpo_core.config import EvaluationSettings
from fgrpo_core.errors import TaskError
from fgrpo_core.families import Example
from fgrpo_core.models import ModelBundle, format_prompt
from fgrpo_core.rewards import is_correct

RewardFn = Callable[..., list[float | None]]


@dataclass(frozen=True)
class EvalResult:
    """Per-prompt rewards and exact-match correctness, in the order of the examples."""

    mean_reward: float
    rewards: list[float]
    accuracy: float
    correct: list[bool]
    n: int
    tokens_generated: int


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
    count as ``reward_range[0]``.
    """
    if not examples:
        raise TaskError("evaluate() got no examples: give every client at least one validation prompt")
    model = bundle.model
    was_training = model.training
    model.eval()
    try:
        prompts = [format_prompt(bundle.tokenizer, ex.question, bundle.chat) for ex in examples]
        completions, tokens = generate_greedy(bundle, prompts, settings.max_new_tokens, settings.batch_size)
    finally:
        model.train(was_training)
    answers = [ex.answer for ex in examples]
    families = [ex.family for ex in examples]
    raw = reward_fn(completions=completions, answer=answers, prompts=prompts, family=families)
    if len(raw) != len(examples):
        raise TaskError(f"reward function returned {len(raw)} rewards for {len(examples)} completions")
    if any(r is None for r in raw) and reward_range is None:
        raise TaskError("reward function returned None; pass reward_range so that None counts as its minimum")
    floor = reward_range[0] if reward_range is not None else 0.0
    rewards = [float(r) if r is not None else floor for r in raw]
    correct = [bool(is_correct(c, a)) for c, a in zip(completions, answers, strict=True)]
    n = len(examples)
    return EvalResult(
        mean_reward=sum(rewards) / n,
        rewards=rewards,
        accuracy=sum(correct) / n,
        correct=correct,
        n=n,
        tokens_generated=tokens,
    )
