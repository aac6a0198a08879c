"""Small value types that cross module boundaries (and the orchestrator): never tensors."""

from __future__ import annotations

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
