"""Procedurally generated, verifiable arithmetic task families (SPEC §4), and local datasets.

The families differ on purpose in reward scale and difficulty (base greedy accuracy of
SmolLM2-135M-Instruct in ENV-NOTES.md: 1-digit + 0.75, 1-digit × 0.53, 2-digit + 0.15,
2-digit − 0.03):

| family | question | reward | range |
| --- | --- | --- | --- |
| add1 | "3+4" (0..9 + 0..9, 100 distinct) | exact | {0, 1} |
| mul1 | "7*8" (0..9 × 0..9, 100 distinct) | partial_credit | [0, 10] |
| sub1 | "7-3" (0..9 − 0..9, a >= b, 55 distinct) | format_penalty | [-1, 1] |
| add2 | "23+45" (10..99 + 10..99, 8,100 distinct) | format_penalty | [-1, 1] |
| sub2 | "57-23" (10..99 − 10..99, a >= b, 4,095 distinct) | format_penalty | [-1, 1] |

Questions are bare expressions without "="; ``models.format_prompt`` turns them into prompts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from fgrpo_core import rewards
from fgrpo_core.errors import TaskError

NO_FAMILY = ""
"""The family of an owner's own TRL-format example: none, its client's reward scores it."""


@dataclass(frozen=True)
class Example:
    """One prompt: a bare question, its answer, and the family it belongs to.

    An owner's TRL-format record (``owner_data.py``) has family ``NO_FAMILY``, keeps its
    ``prompt`` (a string, or a list of chat messages) and its other columns in ``columns``, which
    reach the reward functions as keyword arguments; ``question`` is then the prompt's text.
    """

    question: str
    answer: int | str
    family: str
    prompt: str | list[dict[str, Any]] | None = dataclass_field(default=None, repr=False)
    columns: dict[str, Any] = dataclass_field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class TaskFamily:
    """A generator of examples and the reward that scores them."""

    name: str
    description: str
    reward_name: str
    reward_range: tuple[float, float]
    generate: Callable[[random.Random], Example]
    space_size: int  # distinct questions; small spaces repeat questions across sets


def _add1(rng: random.Random) -> Example:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return Example(f"{a}+{b}", a + b, "add1")


def _mul1(rng: random.Random) -> Example:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return Example(f"{a}*{b}", a * b, "mul1")


def _sub1(rng: random.Random) -> Example:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    big, small = max(a, b), min(a, b)
    return Example(f"{big}-{small}", big - small, "sub1")


def _add2(rng: random.Random) -> Example:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return Example(f"{a}+{b}", a + b, "add2")


def _sub2(rng: random.Random) -> Example:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    big, small = max(a, b), min(a, b)  # a non-negative result keeps the answer format simple
    return Example(f"{big}-{small}", big - small, "sub2")


def _family(
    name: str, description: str, reward_name: str, generate: Callable[[random.Random], Example], space: int
) -> TaskFamily:
    return TaskFamily(name, description, reward_name, rewards.REWARD_RANGES[reward_name], generate, space)


FAMILIES: dict[str, TaskFamily] = {
    "add1": _family("add1", "single-digit addition, exact answer", "exact", _add1, 100),
    "mul1": _family("mul1", "single-digit multiplication, partial credit", "partial_credit", _mul1, 100),
    "sub1": _family("sub1", "single-digit subtraction (>= 0), format penalty", "format_penalty", _sub1, 55),
    "add2": _family("add2", "two-digit addition, format penalty", "format_penalty", _add2, 90 * 90),
    "sub2": _family("sub2", "two-digit subtraction (>= 0), format penalty", "format_penalty", _sub2, 4095),
}


def get_family(name: str) -> TaskFamily:
    """The task family called ``name``; TaskError listing the valid names otherwise."""
    if name not in FAMILIES:
        raise TaskError(f"unknown task family {name!r}; use one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def generate_examples(family: str, n: int, rng: random.Random) -> list[Example]:
    """``n`` examples of ``family`` drawn from ``rng`` (the caller holds and seeds it).

    >>> generate_examples("add1", 2, random.Random(0))
    [Example(question='6+6', answer=12, family='add1'), Example(question='0+4', answer=4, family='add1')]
    """
    generate = get_family(family).generate
    return [generate(rng) for _ in range(n)]


def _example_from_row(row: Any, where: str, default_family: str | None) -> Example:
    """Validate one record; ``where`` is "<file> line N" or "<folder> row N" for the messages."""
    if not isinstance(row, dict):
        raise TaskError(f"{where}: expected an object with 'question' and 'answer', got {type(row).__name__}")
    for field in ("question", "answer"):
        if field not in row:
            raise TaskError(f"{where}: missing field {field!r} (every record needs 'question' and 'answer')")
    question, answer = row["question"], row["answer"]
    if not isinstance(question, str) or not question.strip():
        raise TaskError(f"{where}: field 'question' must be a non-empty string, got {question!r}")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise TaskError(f"{where}: field 'answer' must be an integer, got {answer!r}")
    family = row["family"] if row.get("family") is not None else default_family
    if family is None:
        raise TaskError(
            f"{where}: no field 'family' and no default family; add 'family' to the record "
            "or give the client exactly one family"
        )
    if family not in FAMILIES:
        raise TaskError(f"{where}: field 'family' is {family!r}; use one of {sorted(FAMILIES)}")
    return Example(question, answer, str(family))


def _jsonl_rows(path: Path) -> Iterable[tuple[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            where = f"{path} line {number}"
            if not line.strip():
                continue  # blank lines (a trailing newline) carry no record
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskError(f"{where}: not valid JSON ({err.msg}); write one object per line") from err


def _dataset_rows(path: Path) -> Iterable[tuple[str, Any]]:
    import datasets  # slow import, only when a dataset folder is actually given

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise TaskError(f"{path}: not a dataset saved with save_to_disk ({err})") from err
    if isinstance(loaded, datasets.DatasetDict):
        raise TaskError(
            f"{path}: a DatasetDict with splits {sorted(loaded)}; save one split, "
            "e.g. ds['train'].save_to_disk(folder)"
        )
    for index, row in enumerate(loaded):
        yield f"{path} row {index}", row


def load_local_examples(path: str | Path, default_family: str | None = None) -> list[Example]:
    """A data owner's local examples: a JSONL file or a ``datasets`` folder (``save_to_disk``).

    Each record has "question" (str), "answer" (int) and optionally "family" (a key of FAMILIES;
    ``default_family`` when absent). Errors name the file, the line (or row) and the field.
    """
    source = Path(path)
    if source.is_dir():
        rows = _dataset_rows(source)
    elif source.is_file():
        rows = _jsonl_rows(source)
    else:
        raise TaskError(f"local dataset not found: {source} (give a JSONL file or a save_to_disk folder)")
    examples = [_example_from_row(row, where, default_family) for where, row in rows]
    if not examples:
        raise TaskError(f"{source}: no examples; add records with 'question' and 'answer'")
    return examples
