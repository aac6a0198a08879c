"""One data owner's settings: its data, its reward functions and their declared range.

Re-exported by ``settings``. A reward named by file ('path/file.py:fn') is resolved against the
config file's folder (the validation context ``config_dir``) and imported at validation.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from fgrpo_core.errors import TaskError
from fgrpo_core.rewards import REWARDS, get_reward, is_file_reward
from fgrpo_core.strict import _Strict

CLIENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


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
        description="The owner's own data, read on the client only: JSONL, JSON, CSV, Parquet or a "
        "`datasets` folder saved with save_to_disk. TRL's format (a 'prompt' column, a string or "
        "a list of chat messages, and any other columns, passed to the rewards as keyword "
        "arguments), or records with question, answer[, family]. A relative path is relative to "
        "the config file.",
    )
    reward: str | list[str] | None = Field(
        None,
        description="Reward function(s) by registry name, dotted path 'pkg.module:fn' or file "
        "'path/to/file.py:fn' (relative to the config file); default: the family's. Several are "
        "summed with reward_weights.",
    )
    reward_weights: list[float] | None = Field(
        None, description="Weight of each reward function (TRL's reward_weights); default all 1."
    )
    reward_range: tuple[float, float] | None = Field(
        None,
        description="[lo, hi] of this client's (weighted) reward before reward_scale/shift; "
        "required for a reward that is not a registry name. Rewards seen outside it are counted.",
    )

    @field_validator("reward")
    @classmethod
    def _known_reward(cls, value: str | list[str] | None, info: ValidationInfo) -> str | list[str] | None:
        if value is None:
            return None
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("reward is an empty list: name at least one reward function")
        base = (info.context or {}).get("config_dir")
        resolved = [_resolve_reward_file(n, base) for n in names]
        for name in resolved:
            try:
                get_reward(name)
            except TaskError as err:
                if name in REWARDS or not ("." in name or ":" in name):
                    raise ValueError(str(err)) from err
                raise ValueError(f"{err} (validating the config imports the reward's module)") from err
        return resolved[0] if isinstance(value, str) else resolved

    @field_validator("data_path")
    @classmethod
    def _data_next_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("config_dir")
        if value is None or base is None or Path(value).is_absolute():
            return value
        return str((Path(base) / value).resolve())

    @field_validator("reward_range")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not (
            math.isfinite(value[0]) and math.isfinite(value[1]) and value[0] < value[1]
        ):
            raise ValueError(f"reward_range {list(value)} must be two finite numbers [lo, hi] with lo < hi")
        return value

    @model_validator(mode="after")
    def _declared_range(self) -> ClientSpec:
        names = self.reward_names
        custom = [n for n in names if n not in REWARDS]
        if custom and self.reward_range is None:
            raise ValueError(
                f"clients[{self.id}].reward {custom} is not a registry reward: declare its range "
                "as reward_range: [lo, hi] on the client (the scale floor and the checks use it)"
            )
        if self.reward_weights is not None and len(self.reward_weights) != len(names):
            raise ValueError(
                f"clients[{self.id}].reward_weights has {len(self.reward_weights)} weights for "
                f"{len(names)} reward functions; give one weight per function"
            )
        return self

    @property
    def reward_names(self) -> list[str]:
        """The configured reward functions ([] when the family's reward is used)."""
        if self.reward is None:
            return []
        return [self.reward] if isinstance(self.reward, str) else list(self.reward)

    reward_scale: float = Field(
        1.0, description="Multiply this client's rewards (affine change of scale; 'loud' client)."
    )
    reward_shift: float = Field(0.0, description="Add to this client's rewards.")


def _resolve_reward_file(name: str, config_dir: str | None) -> str:
    """A relative 'file.py:fn' reward becomes absolute against the config file's folder."""
    if not is_file_reward(name) or config_dir is None:
        return name
    file_part, _, fn = name.rpartition(":")
    path = Path(file_part)
    return name if path.is_absolute() else f"{(Path(config_dir) / path).resolve()}:{fn}"
