"""A client's reward function and range: its family's, a mix of families, or configured ones.

Configured rewards (registry names, dotted paths or files, several summed with
``reward_weights``) take the client's declared ``reward_range`` when it has one.

Used by the client's training and validation and by the coordinator's server probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fgrpo_core import rewards
from fgrpo_core.config import ClientSpec
from fgrpo_core.errors import ConfigError, TaskError
from fgrpo_core.families import get_family


def weighted_sum(fns: Sequence[rewards.RewardFn], weights: Sequence[float]) -> rewards.RewardFn:
    """``sum_i w_i * r_i`` per completion, as TRL combines ``reward_funcs`` with ``reward_weights``.

    A function's None adds nothing (TRL's nansum); a completion that every function leaves None
    stays None.

    >>> weighted_sum([rewards.exact, rewards.partial_credit], [2.0, 0.5])(["7", "x"], answer=[7, 7])
    [7.0, 0.0]
    """

    def combined(completions: Sequence[rewards.Completion], **kwargs: Any) -> list[float | None]:
        columns = [fn(completions, **kwargs) for fn in fns]
        for fn, values in zip(fns, columns, strict=True):
            if len(values) != len(completions):
                name = getattr(fn, "__name__", "reward")
                raise TaskError(
                    f"reward {name} returned {len(values)} values for {len(completions)} completions"
                )
        out: list[float | None] = []
        for row in zip(*columns, strict=True):
            terms = [w * float(r) for w, r in zip(weights, row, strict=True) if r is not None]
            out.append(sum(terms) if terms else None)
        return out

    combined.__name__ = "+".join(getattr(fn, "__name__", "reward") for fn in fns)
    return combined


def weighted_range(ranges: Sequence[tuple[float, float]], weights: Sequence[float]) -> tuple[float, float]:
    """The range of ``weighted_sum`` given each function's range (negative weights flip ends).

    >>> weighted_range([(0.0, 1.0), (-1.0, 1.0)], [2.0, -1.0])
    (-1.0, 3.0)
    """
    lo = sum(min(w * a, w * b) for (a, b), w in zip(ranges, weights, strict=True))
    hi = sum(max(w * a, w * b) for (a, b), w in zip(ranges, weights, strict=True))
    return (lo, hi)


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
    names = spec.reward_names
    if names:
        weights = list(spec.reward_weights) if spec.reward_weights is not None else [1.0] * len(names)
        fns = [rewards.get_reward(n) for n in names]
        fn = fns[0] if len(fns) == 1 and weights[0] == 1.0 else weighted_sum(fns, weights)
        if spec.reward_range is not None:
            lo_hi = (float(spec.reward_range[0]), float(spec.reward_range[1]))
        else:
            lo_hi = weighted_range([rewards.reward_range(n) for n in names], weights)
    elif not families or "" in families:
        raise ConfigError(
            f"clients[{spec.id}]: its data has no 'family' column, so no built-in reward applies; "
            "set clients[].reward (and reward_range) for this client"
        )
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
