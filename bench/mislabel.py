"""The `mislabelled` owner's reward: a buggy labelling pipeline whose every answer is off by one.

Used by bench/scenarios.py through its dotted path, the way a user names a custom reward. The
owner's data are the true prompts and answers, so its validation accuracy (exact match on the
true answer) and the global evaluation measure the truth; only its reward is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fgrpo_core.rewards import Completion, exact

DOTTED_PATH = "bench.mislabel:off_by_one"


def off_by_one(
    completions: Sequence[Completion], answer: list[int] | None = None, **kwargs: Any
) -> list[float | None]:
    """1.0 when the last integer equals answer + 1 (the wrong label), else 0.0. Range {0, 1}.

    >>> off_by_one(["8", "7"], answer=[7, 7])
    [1.0, 0.0]
    """
    if answer is None:
        raise ValueError("off_by_one needs the 'answer' column of each prompt")
    return exact(completions, answer=[int(a) + 1 for a in answer], **kwargs)
