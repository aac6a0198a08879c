"""Reward functions with TRL's GRPOTrainer signature, a registry, and a dotted-path or file loader.

Every reward is a plain callable ``fn(completions, *, answer, **kwargs) -> list[float | None]``:
TRL passes the extra dataset columns as keyword lists, here ``answer: list[int]``. A completion is
a string or a conversational list ``[{"role": "assistant", "content": "..."}]``.

The answer a completion gives is its *last* integer (``extract_last_int``), so a model that
reasons before answering is scored on its final number.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fgrpo_core.errors import TaskError

Completion = str | list[dict[str, Any]]
RewardFn = Callable[..., list[float | None]]

# An integer with an optional minus that is not a binary minus: in "12-5" the last integer is 5.
_INT_PATTERN = re.compile(r"(?<!\d)-?\d+")
# "Well formatted" for format_penalty: the text ends with its answer, an integer (then at most a
# period and whitespace), as in "68", "68." or "23 + 45 = 68".
_FORMAT_PATTERN = re.compile(r"(?<!\d)(-?\d+)\.?\s*\Z")


def completion_text(completion: Completion) -> str:
    """The text of a completion: the string itself, or the joined message contents.

    >>> completion_text([{"role": "assistant", "content": "7"}])
    '7'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and all(isinstance(m, dict) and "content" in m for m in completion):
        return "\n".join(str(m["content"]) for m in completion)
    raise TaskError(
        f"a completion must be a str or a list of messages with 'content', got {type(completion).__name__}"
    )


def extract_last_int(text: str) -> int | None:
    """The last integer in ``text`` (optional leading minus), or None. "3.5" reads as 5.

    >>> extract_last_int("3+4 is 7, not -2")
    -2
    """
    found = _INT_PATTERN.findall(text)
    return int(found[-1]) if found else None


def _pairs(completions: Sequence[Completion], answer: Sequence[int | str] | None) -> list[tuple[str, int]]:
    if answer is None:
        raise TaskError("reward functions need the dataset column 'answer' (a list of ints)")
    if len(completions) != len(answer):
        raise TaskError(f"{len(completions)} completions but {len(answer)} answers; pass one per completion")
    pairs = []
    for c, a in zip(completions, answer, strict=True):
        try:
            pairs.append((completion_text(c), int(a)))
        except ValueError as err:
            raise TaskError(
                f"answer {a!r} is not an integer: the built-in rewards score integer answers; "
                "give the client a reward of its own"
            ) from err
    return pairs


def is_correct(completion: Completion, answer: int) -> bool:
    """Exact-match accuracy, whatever the reward: the last integer equals the answer.

    >>> is_correct("so 3*4 = 12", 12)
    True
    """
    return extract_last_int(completion_text(completion)) == answer


def exact(
    completions: Sequence[Completion], answer: list[int] | None = None, **kwargs: Any
) -> list[float | None]:
    """1.0 when the last integer equals the answer, else 0.0. Range {0, 1}.

    >>> exact(["7", "it is 8", "none"], answer=[7, 7, 7])
    [1.0, 0.0, 0.0]
    """
    return [1.0 if extract_last_int(text) == a else 0.0 for text, a in _pairs(completions, answer)]


def partial_credit(
    completions: Sequence[Completion], answer: list[int] | None = None, **kwargs: Any
) -> list[float | None]:
    """Closeness: ``10 * max(0, 1 - |pred - answer| / max(1, |answer|))``. Range [0, 10].

    No integer scores 0. Rounded to 3 decimals so that logged values are readable; the rounding
    (< 5e-4) is far below the smallest step between distinct predictions.

    >>> partial_credit(["56", "54", "x"], answer=[56, 56, 56])
    [10.0, 9.643, 0.0]
    """
    rewards: list[float | None] = []
    for text, a in _pairs(completions, answer):
        pred = extract_last_int(text)
        if pred is None:
            rewards.append(0.0)
            continue
        closeness = max(0.0, 1.0 - abs(pred - a) / max(1, abs(a)))
        rewards.append(round(10.0 * closeness, 3))
    return rewards


def format_penalty(
    completions: Sequence[Completion], answer: list[int] | None = None, **kwargs: Any
) -> list[float | None]:
    """+1 correct, 0 a well-formatted wrong answer, -1 badly formatted. Range [-1, 1].

    Well formatted means the completion ends with its answer: an integer, then at most a period
    and whitespace ("68", "68.", "23 + 45 = 68"). Text after the number ("68 is the sum") or no
    number at all is -1. Chat models answer "23 + 45 = 68" by habit: a stricter rule (only a bare
    integer) scores every greedy answer of SmolLM2-135M -1, an all-equal group that teaches
    nothing (SPEC §4).

    >>> format_penalty([" 68\\n", "67", "23 + 45 = 68.", "68 is the sum", "no idea"], answer=[68] * 5)
    [1.0, 0.0, 1.0, -1.0, -1.0]
    """
    rewards: list[float | None] = []
    for text, a in _pairs(completions, answer):
        match = _FORMAT_PATTERN.search(text)
        if match is None:
            rewards.append(-1.0)
        else:
            rewards.append(1.0 if int(match.group(1)) == a else 0.0)
    return rewards


def contains_answer(
    completions: Sequence[Completion], answer: list[int] | None = None, **kwargs: Any
) -> list[float | None]:
    """1.0 when the decimal answer appears anywhere in the text. Range {0, 1}.

    Deliberately hackable (the 'harmful client' scenario): listing many numbers earns credit.

    >>> contains_answer(["12 or 13 or 14", "12"], answer=[13, 13])
    [1.0, 0.0]
    """
    return [1.0 if str(a) in text else 0.0 for text, a in _pairs(completions, answer)]


REWARDS: dict[str, RewardFn] = {
    "exact": exact,
    "partial_credit": partial_credit,
    "format_penalty": format_penalty,
    "contains_answer": contains_answer,
}

REWARD_RANGES: dict[str, tuple[float, float]] = {
    "exact": (0.0, 1.0),
    "partial_credit": (0.0, 10.0),
    "format_penalty": (-1.0, 1.0),
    "contains_answer": (0.0, 1.0),
}


def _unknown(name: str, why: str) -> TaskError:
    return TaskError(
        f"unknown reward {name!r} ({why}); use one of {sorted(REWARDS)}, a dotted path "
        "'package.module:function' (or 'package.module.function') importable on this machine, "
        "or a file 'path/to/file.py:function'"
    )


def is_file_reward(name: str) -> bool:
    """Whether ``name`` is the file form ``path/to/file.py:function``.

    >>> is_file_reward("rewards/mine.py:score"), is_file_reward("pkg.mod:score")
    (True, False)
    """
    file_part, sep, _ = name.rpartition(":")
    return bool(sep) and file_part.endswith(".py")


def _file_reward(name: str) -> RewardFn:
    file_part, _, attr = name.rpartition(":")
    path = Path(file_part)
    if not path.is_file():
        raise _unknown(name, f"no file {path} (a relative path is relative to the config file)")
    # One module per file path, under a name no import statement can collide with.
    module_name = "fgrpo_reward_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise _unknown(name, f"{path} is not a loadable Python file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # the user's file: report any failure as a fixable error
            raise _unknown(name, f"importing {path} failed: {type(err).__name__}: {err}") from err
        sys.modules[module_name] = module
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise _unknown(name, f"{path} defines no function {attr!r}")
    return fn  # type: ignore[no-any-return]


def get_reward(name: str) -> RewardFn:
    """A reward by registry name, file ``path/file.py:fn``, or dotted path ``pkg.module:fn``.

    >>> get_reward("exact") is exact
    True
    """
    if name in REWARDS:
        return REWARDS[name]
    if is_file_reward(name):
        return _file_reward(name)
    if ":" in name:
        module_name, _, attr = name.partition(":")
    elif "." in name:
        module_name, _, attr = name.rpartition(".")
    else:
        raise _unknown(name, "not a registry name")
    if not module_name or not attr:
        raise _unknown(name, "empty module or function name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise _unknown(name, f"cannot import module {module_name!r}: {err}") from err
    if not hasattr(module, attr):
        raise _unknown(name, f"module {module_name!r} has no attribute {attr!r}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise _unknown(name, f"{name} is not callable")
    return fn  # type: ignore[no-any-return]


def reward_range(name: str) -> tuple[float, float]:
    """The (lo, hi) range of a registry reward; a user reward must declare its own.

    >>> reward_range("partial_credit")
    (0.0, 10.0)
    """
    if name in REWARD_RANGES:
        return REWARD_RANGES[name]
    get_reward(name)  # fail early on a name that is neither registered nor importable
    raise TaskError(f"reward {name!r} has no known range: declare reward_range: [lo, hi] on its client")


def scaled(fn: RewardFn, scale: float, shift: float) -> RewardFn:
    """``scale * r + shift`` for every reward r of ``fn``; None stays None. Keeps fn's name.

    >>> scaled(exact, 10.0, -1.0)(["7", "8"], answer=[7, 7])
    [9.0, -1.0]
    """

    def wrapper(completions: Sequence[Completion], **kwargs: Any) -> list[float | None]:
        raw = fn(completions, **kwargs)
        return [None if r is None else scale * r + shift for r in raw]

    # TRL logs each reward under its function's __name__.
    wrapper.__name__ = getattr(fn, "__name__", "reward")
    wrapper.__qualname__ = wrapper.__name__
    return wrapper


def scaled_range(rng: tuple[float, float], scale: float, shift: float) -> tuple[float, float]:
    """The range of ``scaled(fn, scale, shift)`` given fn's range; ordered for negative scales.

    >>> scaled_range((0.0, 1.0), -2.0, 1.0)
    (-1.0, 1.0)
    """
    ends = (scale * rng[0] + shift, scale * rng[1] + shift)
    return (min(ends), max(ends))
