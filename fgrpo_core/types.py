"""Small value types that cross module boundaries (and the orchestrator): never tensors."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

Adapter = dict[str, torch.Tensor]
"""A LoRA adapter or a delta: PEFT state-dict names -> tensors."""


class ClientStats(BaseModel):
    """What a client reports after a round (SPEC §1, step 5); scalars only."""

    model_config = ConfigDict(extra="forbid")

    client_id: str
    round: int = Field(ge=0)
    n_k: int = Field(ge=1, description="Training prompts used this round.")
    r_pre: float = Field(description="Mean validation reward of the global adapter.")
    r_post: float = Field(description="Mean validation reward after local training.")
    sigma: float = Field(ge=0.0, description="Std of the per-prompt validation rewards (pre).")
    sigma_diff: float = Field(ge=0.0, description="Std of the per-prompt change post - pre.")
    m: int = Field(ge=1, description="Validation prompts.")
    reward_lo: float = Field(description="Lower end of the client's reward range.")
    reward_hi: float = Field(description="Upper end of the client's reward range.")
    acc_pre: float = Field(0.0, description="Validation exact-match accuracy before training.")
    acc_post: float = Field(0.0, description="Validation exact-match accuracy after training.")
    steps: int = Field(0, ge=0)
    tokens_generated: int = Field(0, ge=0)
    wall_time_s: float = Field(0.0, ge=0.0)
    train_reward_mean: float = Field(0.0, description="Mean training reward over the local steps.")
    rewards_out_of_range: int = Field(
        0, ge=0, description="Rewards (training and validation) seen outside [reward_lo, reward_hi]."
    )
    all_equal_group_frac: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Fraction of the local steps' GRPO groups whose rewards were all equal (zero "
        "advantage: they teach nothing); 1.0 means the client's round trained on nothing.",
    )


class ClientHistory(BaseModel):
    """The server's personal statistics of one client (SPEC §2)."""

    model_config = ConfigDict(extra="forbid")

    baseline: float = Field(description="b_k: EMA of r_post (r_pre at the first round).")
    scale: float = Field(description="s_k: EMA of the gain scale (stderr or std).")
    rounds_seen: int = Field(ge=0)


class ServerState(BaseModel):
    """Everything the coordinator carries from one round to the next; JSON-serialisable."""

    model_config = ConfigDict(extra="forbid")

    round: int = Field(0, ge=0, description="Rounds committed so far.")
    clients: dict[str, ClientHistory] = Field(default_factory=dict)
    global_key: str | None = Field(None, description="Store key of the current global adapter.")
    norm_history: list[float] = Field(
        default_factory=list,
        description="Median accepted delta norm of each of the last committed rounds (norm screening).",
    )
    initial_global_norm: float | None = Field(
        None,
        ge=0.0,
        description="Norm of theta_0, the experiment's first global adapter: the global bound's "
        "reference, which no committed round moves (None: not recorded yet).",
    )


class ClientWeight(BaseModel):
    """One client's row of a round's weighting (logged under these names)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str
    n_k: int
    r_pre: float
    r_post: float
    sigma_diff: float
    baseline: float = Field(description="b_k before this round's update.")
    scale: float = Field(description="s_k used for the gain (floored).")
    gain: float = Field(description="Gain after dead zone, before clipping.")
    weight: float


class RoundRow(BaseModel):
    """One client's row of a round table: what it reported, how it was judged and weighted."""

    model_config = ConfigDict(extra="forbid")

    client_id: str
    accepted: bool
    reason: str = Field("", description="Why the delta was rejected or clipped; empty if neither.")
    clipped: bool = False
    delta_norm: float = 0.0
    delta_bytes: int = 0
    n_k: int = 0
    r_pre: float = 0.0
    r_post: float = 0.0
    sigma_diff: float = 0.0
    baseline: float = 0.0
    scale: float = 0.0
    gain: float = 0.0
    weight: float = 0.0
    reported_r_post: float = Field(0.0, description="r_post as the client reported it.")


class FamilyScore(BaseModel):
    """Greedy evaluation of one adapter on one task family."""

    model_config = ConfigDict(extra="forbid")

    accuracy: float
    mean_reward: float
    n: int


class GlobalEval(BaseModel):
    """Evaluation of a global adapter on the global held-out set, per family."""

    model_config = ConfigDict(extra="forbid")

    families: dict[str, FamilyScore]

    @property
    def macro_accuracy(self) -> float:
        return sum(f.accuracy for f in self.families.values()) / max(1, len(self.families))


class EvalSummary(BaseModel):
    """A global adapter's evaluation as logged and reported: per family and the macro average."""

    model_config = ConfigDict(extra="forbid")

    families: dict[str, FamilyScore]
    macro_accuracy: float

    @classmethod
    def of(cls, evaluation: GlobalEval) -> EvalSummary:
        return cls(families=evaluation.families, macro_accuracy=evaluation.macro_accuracy)


class RegistryOutcome(BaseModel):
    """Which model version a round registered and which alias it got (SPEC §6)."""

    model_config = ConfigDict(extra="forbid")

    version: str
    alias: str = Field(description="'champion' or 'challenger'.")
    champion_version: str = Field(description="The champion after this registration.")


class GlobalStep(BaseModel):
    """theta_t as owners download it: an encoded step from theta_{t-1} (fgrpo_core/downlink.py)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, description="Store key of the step's bytes.")
    sha256: str = Field(description="sha256 of the step's bytes.")
    nbytes: int = Field(ge=0, description="Size of the step's bytes.")
    encoding: Literal["bfloat16", "int8"] = Field(description="The step's encoding (federation.delta_dtype).")
    parent_key: str = Field(min_length=1, description="Store key of theta_{t-1}, the step's base.")
    parent_sha256: str = Field(description="sha256 of theta_{t-1}'s float32 bytes.")


class Candidate(BaseModel):
    """A round aggregated but not committed yet: the commit gate decides on it (tasks/aggregate.py)."""

    model_config = ConfigDict(extra="forbid")

    round: int = Field(ge=1)
    candidate_key: str = Field(description="Store key of the aggregate's bytes (no manifest yet).")
    candidate_sha256: str
    candidate_nbytes: int
    rows: list[RoundRow]
    accepted: list[str]
    state: ServerState = Field(description="The server state after this round, if it commits.")
    step: GlobalStep | None = Field(
        None, description="The step owners download (None with float32: they read theta_t itself)."
    )


class RoundResult(BaseModel):
    """Everything one round produced: returned across the Prefect boundary, written once to the
    store (``result.json``), logged once to MLflow and rendered once (``fgrpo_io.reports``)."""

    model_config = ConfigDict(extra="forbid")

    round: int = Field(ge=1)
    status: Literal["committed", "refused", "rolled_back"] = Field(
        description="'refused': the new global failed the commit gate and theta_{t-1} stays the head; "
        "'rolled_back': an operator made an earlier committed global the head (`fgrpo rollback`)."
    )
    reason: str = Field("", description="Why the round was refused or rolled back; empty if committed.")
    global_key: str = Field(description="Store key of theta_t (theta_{t-1}'s when refused).")
    candidate_key: str = Field(description="Store key of the aggregate this round computed.")
    state_key: str
    rows: list[RoundRow]
    evaluation: EvalSummary = Field(description="The candidate's global evaluation.")
    mlflow_round_run_id: str | None = None
    registry: RegistryOutcome | None = None

    @property
    def macro_accuracy(self) -> float:
        return self.evaluation.macro_accuracy
