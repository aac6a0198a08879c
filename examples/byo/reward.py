"""An owner's own reward, in TRL's signature: extra data columns arrive as keyword arguments.

Declared in the config with ``reward_range``; fgrpo counts and reports any value outside it.
"""

from __future__ import annotations

import re
from typing import Any


def _text(completion: Any) -> str:
    # A string, or TRL's conversational form [{"role": "assistant", "content": ...}].
    return completion if isinstance(completion, str) else " ".join(m["content"] for m in completion)


def correct_sum(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the last number is the answer, 0.0 for another number, -0.5 without a number.

    >>> correct_sum(["It is 7", "8", "no idea"], answer=["7", "7", "7"])
    [1.0, 0.0, -0.5]
    """
    rewards = []
    for completion, expected in zip(completions, answer, strict=True):
        numbers = re.findall(r"-?\d+", _text(completion))
        rewards.append(-0.5 if not numbers else float(numbers[-1] == expected.strip()))
    return rewards
