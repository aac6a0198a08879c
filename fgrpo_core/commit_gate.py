"""The commit gate (SPEC §5): a round's new global must be finite and must not lose too much.

The coordinator evaluates the candidate before it commits; a refused round is recorded with its
reason and theta_{t-1} stays the head, so no owner's delta can make the global unusable or block
the rounds after it. Pure.
"""

from __future__ import annotations

import math

import torch

from fgrpo_core.types import Adapter


def non_finite_keys(adapter: Adapter) -> list[str]:
    """Keys of the tensors holding a NaN or an Inf (a finite sum clears a tensor in one reduction)."""
    return [
        key
        for key in sorted(adapter)
        if not math.isfinite(float(adapter[key].sum())) and not bool(torch.isfinite(adapter[key]).all())
    ]


def gate_reason(
    candidate: Adapter, candidate_macro: float, head_macro: float, max_eval_drop: float | None
) -> str:
    """Why the candidate may not become the head; "" when it may."""
    bad = non_finite_keys(candidate)
    if bad:
        return f"commit gate: the new global has non-finite values in {len(bad)} tensor(s), first {bad[0]!r}"
    if not math.isfinite(candidate_macro):
        return "commit gate: the new global's evaluation is not finite"
    if max_eval_drop is not None and candidate_macro < head_macro - max_eval_drop:
        return (
            f"commit gate: macro accuracy {candidate_macro:.4f} is more than "
            f"federation.max_eval_drop={max_eval_drop:g} below the head's {head_macro:.4f}"
        )
    return ""
