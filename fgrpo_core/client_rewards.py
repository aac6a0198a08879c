"""A client's reward function and range: its family's, a mix of families, or a configured one.

Used by the client's training and validation and by the coordinator's server probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fgrpo_core import rewards
from fgrpo_core.config import ClientSpec
from fgrpo_core.errors import ConfigError
from fgrpo_core.families import get_family


def family_dispatch(families: Sequence[str]) -> rewards.RewardFn:
    """Score each completion with its own family's reward (a client may mix families)."""
    table = {f: rewards.get_reward(get_family(f).reward_name) for f in families}

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        fams = kwargs.get("family")
        if fams is None:
            raise ConfigError("a multi-family reward needs the 'family' column of each prompt")
        out: list[float | None] = []
        for completion, answer, fam in zip(completions, kwargs["answer"], fams, strict=True):
            out.extend(table[fam]([completion], answer=[answer]))
        return out

    reward.__name__ = "+".join(get_family(f).reward_name for f in families)
    return reward


def client_reward(spec: ClientSpec, families: Sequence[str]) -> tuple[rewards.RewardFn, tuple[float, float]]:
    """The client's reward function and its range, after the client's affine scale and shift."""
    if spec.reward is not None:
        fn, lo_hi = rewards.get_reward(spec.reward), rewards.reward_range(spec.reward)
    elif len(families) == 1:
        name = get_family(families[0]).reward_name
        fn, lo_hi = rewards.get_reward(name), rewards.reward_range(name)
    else:
        ranges = [get_family(f).reward_range for f in families]
        fn, lo_hi = family_dispatch(families), (min(r[0] for r in ranges), max(r[1] for r in ranges))
    if spec.reward_scale == 1.0 and spec.reward_shift == 0.0:
        return fn, lo_hi
    return (
        rewards.scaled(fn, spec.reward_scale, spec.reward_shift),
        rewards.scaled_range(lo_hi, spec.reward_scale, spec.reward_shift),
    )
