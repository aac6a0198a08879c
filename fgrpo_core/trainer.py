"""One client's local round (SPEC §1, steps 1–4): evaluate, run TRL GRPO on the LoRA adapter, evaluate.

``train_client`` loads the global adapter, measures ``r_pre`` and ``sigma`` on the client's fixed
validation prompts (greedy), runs ``grpo.local_steps`` optimizer steps of TRL's ``GRPOTrainer`` on its
training prompts, measures ``r_post`` and ``sigma_diff`` on the same prompts, and returns the
trained adapter with the scalars of ``ClientStats``.

Randomness: TRL's ``GRPOTrainer.__init__`` and transformers' ``Trainer.__init__`` both call
``transformers.set_seed(seed)``, which seeds Python's ``random``, NumPy's and torch's global RNGs (CUDA
included). That is TRL's behaviour, not ours; this module seeds nothing else. The prompt order is a
local ``random.Random(seed)``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from trl import GRPOConfig, GRPOTrainer

from fgrpo_core.config import EvaluationSettings, GrpoSettings
from fgrpo_core.errors import TaskError
from fgrpo_core.evaluate import RewardFn, as_completions, count_out_of_range, evaluate, reward_columns
from fgrpo_core.families import Example
from fgrpo_core.models import ModelBundle, example_prompt, get_adapter, set_adapter
from fgrpo_core.partition import ClientData
from fgrpo_core.types import Adapter, ClientStats

Progress = Callable[[int, int, float], None]


@dataclass
class TrainResult:
    """The trained adapter, the round's scalars, and the training reward logged at each step."""

    adapter: Adapter
    stats: ClientStats
    reward_log: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class _RolloutTally:
    """What the reward function saw during training: prompts, completion tokens, rewards."""

    prompt_indices: set[int] = field(default_factory=set)
    completion_tokens: int = 0
    rewards: list[float] = field(default_factory=list)
    groups: int = 0
    all_equal_groups: int = 0  # groups with one reward for every completion: zero advantage

    def count_groups(self, prompt_index: Sequence[int], rewards: Sequence[float], size: int) -> None:
        """Tally GRPO groups: TRL's sampler yields each prompt ``size`` times in a row."""
        for start in range(0, len(rewards), size):
            group = rewards[start : start + size]
            if len(set(prompt_index[start : start + size])) != 1:
                raise TaskError(f"a reward batch does not hold whole groups of {size}: {prompt_index}")
            self.groups += 1
            self.all_equal_groups += int(max(group) - min(group) <= 1e-12)


class _RewardLogCallback(TrainerCallback):
    """Records TRL's per-step mean training reward and reports it to ``progress``."""

    def __init__(self, max_steps: int, progress: Progress | None) -> None:
        self.max_steps = max_steps
        self.progress = progress
        self.log: list[tuple[int, float]] = []

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        reward = (logs or {}).get("reward")
        if reward is None:  # the final summary log, or a step whose rewards were all None
            return
        self.log.append((state.global_step, float(reward)))
        if self.progress is not None:
            self.progress(state.global_step, self.max_steps, float(reward))


def _tracked_reward(
    reward_fn: RewardFn,
    tally: _RolloutTally,
    floor: float,
    group_size: int,
    examples: Sequence[Example] = (),
) -> RewardFn:
    """``reward_fn`` for TRL, plus a tally of prompts, tokens and all-equal groups.

    With ``examples`` (the client's training prompts), a completion of a prompt given as chat
    messages reaches the reward as messages, as TRL would pass it.
    """

    def tracked(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        if examples:
            rows = [examples[int(i)] for i in kwargs["prompt_index"]]
            completions = as_completions(rows, [str(c) for c in completions])
        rewards = reward_fn(completions=completions, **kwargs)
        tally.prompt_indices.update(int(i) for i in kwargs["prompt_index"])
        tally.completion_tokens += sum(len(ids) for ids in kwargs["completion_ids"])
        scored = [floor if r is None else float(r) for r in rewards]
        tally.rewards.extend(scored)
        tally.count_groups([int(i) for i in kwargs["prompt_index"]], scored, group_size)
        return rewards

    # TRL logs each reward function under its __name__.
    tracked.__name__ = getattr(reward_fn, "__name__", "reward")
    return tracked


def _prompt_rows(
    bundle: ModelBundle, data: ClientData, grpo: GrpoSettings, seed: int
) -> dict[str, list[Any]]:
    """The prompts of the local steps in order: the client's prompts shuffled, cycled if too few."""
    if not data.train:
        raise TaskError(f"client {data.client_id} has no training prompts: give it n_train >= 1")
    prompts_per_step = (
        grpo.per_device_train_batch_size * grpo.gradient_accumulation_steps // grpo.num_generations
    )
    order = list(range(len(data.train)))
    random.Random(seed).shuffle(order)
    needed = grpo.local_steps * prompts_per_step
    indices = [order[i % len(order)] for i in range(needed)]
    examples = [data.train[i] for i in indices]
    # An owner's own columns, or answer and family (a client mixing families dispatches on it,
    # client_rewards.family_dispatch); TRL passes every column to the reward.
    return {
        "prompt": [example_prompt(bundle, ex) for ex in examples],
        **reward_columns(examples),
        "prompt_index": indices,
    }


def grpo_config(grpo: GrpoSettings, seed: int, output_dir: Path, use_cpu: bool) -> GRPOConfig:
    """Every TRL/transformers setting that changes the run, set from GrpoSettings (TRL defaults differ)."""
    return GRPOConfig(
        output_dir=str(output_dir),
        # optimisation
        max_steps=grpo.local_steps,
        learning_rate=grpo.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        weight_decay=grpo.weight_decay,
        max_grad_norm=grpo.max_grad_norm,
        per_device_train_batch_size=grpo.per_device_train_batch_size,
        gradient_accumulation_steps=grpo.gradient_accumulation_steps,
        bf16=grpo.bf16,
        fp16=False,
        gradient_checkpointing=grpo.gradient_checkpointing,
        use_cpu=use_cpu,
        seed=seed,
        # GRPO objective
        num_generations=grpo.num_generations,
        num_iterations=1,
        beta=grpo.beta,
        epsilon=grpo.epsilon,
        loss_type=grpo.loss_type,
        scale_rewards=grpo.scale_rewards,
        mask_truncated_completions=False,
        disable_dropout=False,
        # generation
        max_completion_length=grpo.max_completion_length,
        temperature=grpo.temperature,
        top_p=grpo.top_p,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        use_vllm=grpo.use_vllm,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=grpo.vllm_gpu_memory_utilization,
        # data: rows are already shuffled and cycled by us, and extra columns reach the reward
        shuffle_dataset=False,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=not use_cpu,
        # no side effects: no checkpoints, no trackers, no hub
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        push_to_hub=False,
        log_completions=False,
        disable_tqdm=True,
    )


def train_client(
    bundle: ModelBundle,
    global_adapter: Adapter,
    data: ClientData,
    reward_fn: RewardFn,
    reward_range: tuple[float, float],
    grpo: GrpoSettings,
    evaluation: EvaluationSettings,
    round_idx: int,
    seed: int,
    output_dir: str | Path,
    progress: Progress | None = None,
) -> TrainResult:
    """Local GRPO from ``global_adapter`` on ``data``; the bundle's model holds the trained adapter after."""
    started = time.perf_counter()
    set_adapter(bundle.model, global_adapter)
    pre = evaluate(bundle, data.val, reward_fn, evaluation, reward_range)

    tally = _RolloutTally()
    callback = _RewardLogCallback(grpo.local_steps, progress)
    run_dir = Path(output_dir) / f"{data.client_id}-round-{round_idx:04d}"
    trainer = GRPOTrainer(
        # The adapter is already attached: pass the PeftModel itself and no peft_config, so TRL
        # trains it in place instead of wrapping a second adapter.
        model=bundle.model,
        reward_funcs=[_tracked_reward(reward_fn, tally, reward_range[0], grpo.num_generations, data.train)],
        args=grpo_config(grpo, seed, run_dir, use_cpu=bundle.device.type == "cpu"),
        train_dataset=Dataset.from_dict(_prompt_rows(bundle, data, grpo, seed)),
        processing_class=bundle.tokenizer,
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # disable_tqdm=True would print every log dict
    trainable = {name: p.requires_grad for name, p in bundle.model.named_parameters()}
    try:
        trainer.train()  # `progress` may raise to stop it (a warm owner's round closed)
        steps = int(trainer.state.global_step)
    finally:
        del trainer
        # With beta > 0 TRL adds a frozen "ref" copy of the adapter for the KL term: drop it, so
        # the next round starts from the same single-adapter model (also after a stopped one);
        # PEFT may re-enable gradients of the remaining adapter on the way, so put back which
        # tensors train (freeze_a keeps A fixed).
        if "ref" in bundle.model.peft_config:
            bundle.model.delete_adapter("ref")
        for name, param in bundle.model.named_parameters():
            param.requires_grad_(trainable[name])

    post = evaluate(bundle, data.val, reward_fn, evaluation, reward_range)
    pre_rewards = np.asarray(pre.rewards, dtype=np.float64)
    diff = np.asarray(post.rewards, dtype=np.float64) - pre_rewards
    stats = ClientStats(
        client_id=data.client_id,
        round=round_idx,
        n_k=len(tally.prompt_indices),
        r_pre=pre.mean_reward,
        r_post=post.mean_reward,
        sigma=float(pre_rewards.std()),
        sigma_diff=float(diff.std()),
        m=pre.n,
        reward_lo=reward_range[0],
        reward_hi=reward_range[1],
        acc_pre=pre.accuracy,
        acc_post=post.accuracy,
        steps=steps,
        tokens_generated=tally.completion_tokens + pre.tokens_generated + post.tokens_generated,
        wall_time_s=time.perf_counter() - started,
        train_reward_mean=float(np.mean(tally.rewards)) if tally.rewards else 0.0,
        rewards_out_of_range=count_out_of_range(
            tally.rewards, reward_range, f"client {data.client_id} training"
        )
        + pre.out_of_range
        + post.out_of_range,
        all_equal_group_frac=tally.all_equal_groups / tally.groups if tally.groups else 0.0,
    )
    return TrainResult(adapter=get_adapter(bundle.model), stats=stats, reward_log=callback.log)
