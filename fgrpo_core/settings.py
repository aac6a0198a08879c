"""Settings of each concern of an experiment, one pydantic model each, unknown keys rejected.

Every field carries a description; invariants within one concern are checked at construction,
in the spirit of TRL's ``GRPOConfig.__post_init__``. ``config.py`` composes them into an
``ExperimentConfig`` and checks the invariants across concerns. Secrets (S3 credentials) never
live here: they come from the environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from fgrpo_core.client_settings import CLIENT_ID_PATTERN, ClientSpec
from fgrpo_core.errors import TaskError
from fgrpo_core.families import get_family
from fgrpo_core.model_settings import ModelSettings
from fgrpo_core.record_settings import PREFIX_SEGMENT_PATTERN, StoreSettings, TrackingSettings
from fgrpo_core.strict import _Strict

__all__ = [
    "CLIENT_ID_PATTERN",
    "PREFIX_SEGMENT_PATTERN",
    "ClientSpec",
    "ModelSettings",
    "StoreSettings",
    "TrackingSettings",
    "_Strict",
]

# PEFT's shorthand: every linear layer except the output head.
ALL_LINEAR: Literal["all-linear"] = "all-linear"
# An experiment name; also a store key segment (fgrpo_io/layout.py checks keys with the same one).
EXPERIMENT_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$"


class LoraSettings(_Strict):
    """The LoRA adapter trained by every client (PEFT)."""

    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ALL_LINEAR,
        description="Names of the linear layers that get an adapter, or PEFT's 'all-linear' (every "
        "linear layer except the output head: q/k/v/o/gate/up/down_proj on Llama, c_attn/c_proj/"
        "c_fc on GPT-2).",
    )

    @field_validator("target_modules")
    @classmethod
    def _some_targets(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError("lora.target_modules is empty: list layer names or use 'all-linear'")
        return value

    freeze_a: bool = Field(
        False,
        description="Keep the A matrices at their shared initialisation (FFA-LoRA), so that the "
        "weighted average of B is exactly the weighted average of the products B·A.",
    )
    init_seed: int = Field(0, description="Seed of the initial global adapter (same for all clients).")


class GrpoSettings(_Strict):
    """Local GRPO on each client (TRL GRPOTrainer); every TRL setting that matters is explicit."""

    local_steps: int = Field(4, ge=1, description="Optimizer steps per client per round.")
    learning_rate: float = Field(1e-3, gt=0.0, description="AdamW learning rate of the LoRA weights.")
    num_generations: int = Field(8, ge=2, description="Completions per prompt (the GRPO group size).")
    per_device_train_batch_size: int = Field(
        16, ge=2, description="Completions per optimizer step; a multiple of num_generations."
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_completion_length: int = Field(8, ge=1, description="Maximum new tokens per completion.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature during training.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling during training.")
    beta: float = Field(0.0, ge=0.0, description="KL coefficient to the reference model (0 = none).")
    epsilon: float = Field(0.2, gt=0.0, description="PPO-style ratio clipping range.")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field("dapo", description="TRL loss type.")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the group's ('group'), batch's, or no std."
    )
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    bf16: bool = Field(False, description="bf16 autocast (CUDA, or CPU when supported).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (less memory, ~30% slower)."
    )
    use_vllm: bool = Field(
        False,
        description="Generate training completions with vLLM in TRL's colocate mode (CUDA and the "
        "optional extra 'vllm' needed).",
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0.0, le=1.0, description="Share of GPU memory vLLM may take (use_vllm)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses CUDA when present, else the CPU."
    )
    torch_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="torch's intra-op CPU threads in every process that loads the model (0: torch's "
        "default, one per core; owner worker processes get the cores shared out among them). On 2 "
        "cores the tiny model runs 1.69x faster at 1 than at 2; SmolLM2's step is faster at 2 "
        "(bench/results/torch-threads.md).",
    )

    @model_validator(mode="after")
    def _batch_divisible(self) -> GrpoSettings:
        if self.per_device_train_batch_size % self.num_generations != 0:
            raise ValueError(
                f"grpo.per_device_train_batch_size ({self.per_device_train_batch_size}) must be a "
                f"multiple of grpo.num_generations ({self.num_generations})"
            )
        return self


class DataSettings(_Strict):
    """Generated task data and how it is split across clients."""

    families: list[str] = Field(
        default_factory=lambda: ["add1", "mul1", "add2"], min_length=1, description="Task families."
    )

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: list[str]) -> list[str]:
        for name in value:
            try:
                get_family(name)
            except TaskError as err:
                raise ValueError(str(err)) from err
        return value

    dirichlet_alpha: float = Field(
        0.3, gt=0.0, description="Dirichlet concentration of each client's family mix (small = non-IID)."
    )
    min_per_family: int = Field(0, ge=0, description="Minimum prompts per listed family in a client's mix.")
    eval_per_family: int = Field(32, ge=1, description="Global held-out evaluation prompts per family.")
    probe_per_family: int = Field(
        32, ge=1, description="Public probe prompts per family (gain_source 'server_probe')."
    )
    seed: int = Field(0, description="Seed of data generation and partitioning.")


class AggregationSettings(_Strict):
    """How the coordinator combines client deltas (SPEC §2, §5)."""

    strategy: Literal["fedavg", "reward", "fgrpo", "trimmed_mean", "median"] = Field(
        "fgrpo", description="Weighting rule; 'trimmed_mean', 'median': coordinate-wise (robust.py)."
    )
    trim_fraction: float = Field(
        0.2, ge=0.0, lt=0.5, description="trimmed_mean: floor(this x K) cut per end."
    )
    server_lr: float = Field(1.0, gt=0.0, description="eta: theta += eta * sum_k w_k delta_k.")
    baseline_beta: float = Field(
        0.7, ge=0.0, lt=1.0, description="EMA factor of the personal baseline b_k and scale s_k."
    )
    gain_scale: Literal["stderr", "std"] = Field(
        "stderr", description="Scale s_k: EMA of sigma_diff/sqrt(m) ('stderr') or of sigma ('std')."
    )
    gain_reference: Literal["round_start", "history"] = Field(
        "round_start", description="Reference of the gain: r_pre ('round_start') or b_k ('history')."
    )
    gain_deadzone: float = Field(1.0, ge=0.0, description="|gain| below this counts as no progress.")
    tau: float = Field(1.0, gt=0.0, description="Temperature of exp(gain / tau).")
    gain_clip: float = Field(3.0, gt=0.0, description="Gains are clipped to [-gain_clip, gain_clip].")
    lam: float = Field(1.0, ge=0.0, description="Exponent of n_k in the FGRPO weight.")
    mu: float = Field(0.1, ge=0.0, le=1.0, description="Uniform mixing: w = (1-mu) u/sum u + mu/K.")
    scale_floor_frac: float = Field(
        1e-3, gt=0.0, description="scale_floor = this fraction of the client's reward range."
    )
    scale_start: Literal["first_round", "first_informative"] = Field(
        "first_informative",
        description="Where s_k's EMA starts (SPEC §2): at the first round whose scale exceeds the floor, or "
        "'first_round'. A round with no changed answer neither seeds s_k nor pulls it toward 0.",
    )
    gain_n: Literal["n_k", "informative"] = Field(
        "n_k", description="n_k in u_k, or 'informative': n_k x (1 - all_equal_group_frac) (algorithm.md)."
    )
    negative_gain: Literal["down_weight", "exclude"] = Field(
        "down_weight", description="'exclude': weight 0 for a negative gain, unless all are (algorithm.md)."
    )
    weight_cap: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Most weight one client can take: max(weight_cap, its FedAvg share n_k / sum n) "
        "(excess is redistributed). The default 0.5 means a liar among two owners cannot take the "
        "round (SPEC §5); FedAvg itself is never capped. 1 turns the cap off.",
    )
    lora_aggregation: Literal["separate", "freeze_a"] = Field(
        "separate", description="Average A and B separately, or keep A frozen (needs lora.freeze_a)."
    )
    max_delta_norm_ratio: float = Field(
        5.0, gt=1.0, description="A delta whose norm exceeds this times the round's median is handled."
    )
    norm_action: Literal["clip", "reject"] = Field(
        "clip", description="What happens to a delta above the tightest norm bound (clip to it or reject)."
    )
    max_delta_history_ratio: float = Field(
        10.0,
        gt=1.0,
        description="A delta whose norm exceeds this times the median accepted norm of earlier "
        "rounds is handled (a bound no owner of this round can move; fgrpo_core/screening.py).",
    )
    norm_history_rounds: int = Field(
        8, ge=0, description="Earlier committed rounds whose median accepted norm is remembered (0: none)."
    )
    max_delta_global_ratio: float = Field(
        1.0,
        gt=0.0,
        description="A delta whose norm exceeds this times the global adapter's own norm is handled "
        "(works from round 1 and when the round's median is 0).",
    )
    gain_source: Literal["reported", "server_probe"] = Field(
        "reported",
        description="'server_probe': the coordinator recomputes r_post on a public probe set of "
        "the client's family instead of trusting the reported value.",
    )

    @model_validator(mode="after")
    def _no_history_with_stderr(self) -> AggregationSettings:
        # SPEC §2: the distance to a lagging history includes everyone's progress; a paired
        # standard error is far smaller, so this pair turns global drift into large gains.
        if self.gain_reference == "history" and self.gain_scale == "stderr":
            raise ValueError(
                "aggregation.gain_reference 'history' cannot be combined with gain_scale 'stderr' "
                "(global drift would read as large gains); use gain_scale 'std'"
            )
        return self


class EvaluationSettings(_Strict):
    """Greedy evaluation (client validation, global evaluation, server probes)."""

    max_new_tokens: int = Field(8, ge=1, description="Maximum new tokens of a greedy answer.")
    batch_size: int = Field(32, ge=1, description="Prompts per generation batch.")


class FederationSettings(_Strict):
    """Rounds, quorum and transport of deltas."""

    rounds: int = Field(2, ge=1, description="Federated rounds R.")
    min_clients: int = Field(1, ge=1, description="A round commits with at least this many valid deltas.")
    round_timeout_s: float = Field(3600.0, gt=0.0, description="Longest wait for a round's clients.")
    delta_dtype: Literal["float32", "bfloat16", "int8"] = Field(
        "float32", description="Encoding of uploaded deltas."
    )
    max_parallel_clients: int = Field(
        1,
        ge=1,
        description="Embedded mode: client tasks trained at once in the coordinator's process. TRL "
        "seeds the process-wide torch RNG, so more than 1 trades bit-for-bit reproducibility (and "
        "exact resume) for speed; distributed owners each run in their own process.",
    )
    owner_processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Embedded mode: 0 trains the owners in the coordinator's process (threads, "
        "max_parallel_clients); N > 0 trains them in N worker processes of a local Dask cluster "
        "(prefect-dask), one owner at a time per process, each process keeping its model loaded "
        "for the whole experiment: reproducible, and the way to simulate many owners.",
    )
    mode: Literal["embedded", "distributed"] = Field(
        "embedded",
        description="'embedded': clients run as tasks of the coordinator's flow; 'distributed': each "
        "client runs as a deployment in its owner's work pool.",
    )
    max_eval_drop: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Commit gate: refuse a round whose new global loses more than this much macro "
        "accuracy (0..1) on the coordinator's evaluation against the head's; theta_{t-1} stays the "
        "head. None: only a non-finite global is refused.",
    )
