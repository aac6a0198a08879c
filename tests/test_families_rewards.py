"""Rewards (values, ranges, hackability, registry, scaling) and task families (generation, local data)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgrpo_core import families, rewards
from fgrpo_core.errors import TaskError
from fgrpo_core.families import FAMILIES, Example, generate_examples, get_family, load_local_examples
from fgrpo_core.rewards import (
    REWARD_RANGES,
    REWARDS,
    completion_text,
    contains_answer,
    exact,
    extract_last_int,
    get_reward,
    is_correct,
    partial_credit,
    reward_range,
    scaled,
    scaled_range,
)


def my_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """A user's reward, loaded by dotted path in the registry test."""
    return [float(len(completion_text(c))) for c in completions]


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# --- rewards ---------------------------------------------------------------------------------


def test_extract_last_int_cases() -> None:
    # Prepare: texts with hand-read last integers (a binary minus is not a sign).
    cases = {"7": 7, "it is -3": -3, "12-5": 5, "3+4=7.": 7, "no digits": None, "007": 7, " -0 ": 0}
    # Execute
    got = {text: extract_last_int(text) for text in cases}
    # Assert
    assert got == cases


@pytest.mark.parametrize("wrap", [lambda t: t, _chat], ids=["str", "conversational"])
def test_rewards_match_hand_computed_values(wrap: Any) -> None:
    # Prepare: answer 56 throughout; expected values computed by hand from the definitions.
    texts = ["56", "The answer is 54", " 56\n", "56.", "no idea", "-56", "112"]
    completions = [wrap(t) for t in texts]
    answer = [56] * len(texts)
    expected = {
        "exact": [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        # 10 * (1 - 2/56) = 9.6428... -> 9.643; |-56-56|/56 = 2 and |112-56|/56 = 1 -> 0.
        "partial_credit": [10.0, 9.643, 10.0, 10.0, 0.0, 0.0, 0.0],
        # well formatted = ends with the answer: "The answer is 54" is 0 (wrong), "no idea" -1.
        "format_penalty": [1.0, 0.0, 1.0, 1.0, -1.0, 0.0, 0.0],
        "contains_answer": [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0],
    }
    # Execute
    got = {name: REWARDS[name](completions, answer=answer) for name in expected}
    accuracy = [is_correct(c, 56) for c in completions]
    # Assert
    assert got == expected
    assert accuracy == [v == 1.0 for v in expected["exact"]]


def test_partial_credit_answer_zero_uses_unit_denominator() -> None:
    # Prepare / Execute: answer 0, so closeness is 1 - |pred| / 1.
    got = partial_credit(["0", "1", "5"], answer=[0, 0, 0])
    # Assert
    assert got == [10.0, 0.0, 0.0]


def test_contains_answer_is_hackable_and_exact_is_not() -> None:
    # Prepare
    hack = ["12 or 13 or 14"]
    # Execute
    hacked, honest = contains_answer(hack, answer=[13]), exact(hack, answer=[13])
    # Assert
    assert hacked == [1.0]
    assert honest == [0.0]


def test_reward_checks_answer_column() -> None:
    # Execute / Assert: a missing column and a length mismatch say what to pass.
    with pytest.raises(TaskError, match="'answer'"):
        exact(["1"])
    with pytest.raises(TaskError, match="2 completions but 1 answers"):
        exact(["1", "2"], answer=[1])


_texts = st.one_of(
    st.text(max_size=30),
    st.integers(-200, 200).map(str),
    st.from_regex(r"\s*-?\d{1,4}\s*", fullmatch=True),
)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(_texts, min_size=1, max_size=8), answer=st.integers(-200, 200), chat=st.booleans())
def test_rewards_stay_within_their_ranges(texts: list[str], answer: int, chat: bool) -> None:
    # Prepare
    completions: list[Any] = [_chat(t) for t in texts] if chat else list(texts)
    for name, fn in REWARDS.items():
        lo, hi = REWARD_RANGES[name]
        # Execute
        values = fn(completions, answer=[answer] * len(texts))
        # Assert
        assert all(v is not None and lo <= v <= hi for v in values), (name, texts, values)


def test_registry_unknown_name_lists_valid_names_and_dotted_paths() -> None:
    # Execute / Assert
    with pytest.raises(TaskError) as info:
        get_reward("exactt")
    message = str(info.value)
    assert all(name in message for name in REWARDS)
    assert "dotted path" in message
    with pytest.raises(TaskError, match="cannot import module"):
        get_reward("no_such_pkg.mod:fn")
    with pytest.raises(TaskError, match="has no attribute"):
        get_reward("tests.test_families_rewards:missing")


@pytest.mark.parametrize(
    "path", ["tests.test_families_rewards:my_reward", "tests.test_families_rewards.my_reward"]
)
def test_registry_loads_dotted_path(path: str) -> None:
    # Execute
    fn = get_reward(path)
    # Assert: it behaves like my_reward; a user reward has no assumed range, it must declare one.
    assert fn(["abc", _chat("de")], answer=[1, 2]) == [3.0, 2.0]
    with pytest.raises(TaskError, match="declare reward_range"):
        reward_range(path)
    assert get_reward("exact") is exact
    assert reward_range("partial_credit") == (0.0, 10.0)


def test_scaled_wrapper_and_range() -> None:
    # Prepare: a reward that abstains (None) on the second completion.
    def abstaining(completions: list[Any], **kwargs: Any) -> list[float | None]:
        return [1.0, None, 0.5][: len(completions)]

    # Execute
    loud = scaled(abstaining, 10.0, -2.0)
    values = loud(["a", "b", "c"], answer=[0, 0, 0])
    # Assert: affine map, None kept, name kept for TRL's logs; ranges ordered for negative scales.
    assert values == [8.0, None, 3.0]
    assert loud.__name__ == "abstaining"
    assert scaled(exact, 3.0, 1.0)(["7", "8"], answer=[7, 7]) == [4.0, 1.0]
    assert scaled_range((0.0, 10.0), 0.1, 0.0) == (0.0, 1.0)
    assert scaled_range((-1.0, 1.0), -2.0, 0.5) == (-1.5, 2.5)


def test_completion_text_rejects_other_types() -> None:
    # Execute / Assert
    assert completion_text(
        [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]
    ) == ("a\nb")
    with pytest.raises(TaskError, match="a completion must be"):
        completion_text(42)  # type: ignore[arg-type]


# --- task families ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generators_are_seeded_and_correct(family: str) -> None:
    # Execute
    first = generate_examples(family, 200, random.Random(7))
    again = generate_examples(family, 200, random.Random(7))
    other = generate_examples(family, 200, random.Random(8))
    # Assert: deterministic, seed-dependent, answers equal Python's evaluation of the question.
    assert first == again
    assert first != other
    for ex in first:
        assert ex.family == family
        assert "=" not in ex.question
        assert ex.answer == eval(ex.question)  # reference: Python arithmetic on "a+b", "a*b", "a-b"
    assert get_family(family).reward_range == REWARD_RANGES[get_family(family).reward_name]


def test_family_shapes() -> None:
    # Execute
    samples = {f: generate_examples(f, 300, random.Random(0)) for f in FAMILIES}
    # Assert: operand sizes and sub1/sub2's non-negative results; rewards per SPEC §4.
    assert all(len(e.question) == 3 and e.question[1] == "+" for e in samples["add1"])
    assert all(len(e.question) == 3 and e.question[1] == "*" for e in samples["mul1"])
    assert all(len(e.question) == 3 and e.question[1] == "-" and e.answer >= 0 for e in samples["sub1"])
    assert all(len(e.question) == 5 and e.question[2] == "+" for e in samples["add2"])
    assert all(len(e.question) == 5 and e.question[2] == "-" and e.answer >= 0 for e in samples["sub2"])
    assert {f: FAMILIES[f].reward_name for f in FAMILIES} == {
        "add1": "exact",
        "mul1": "partial_credit",
        "sub1": "format_penalty",
        "add2": "format_penalty",
        "sub2": "format_penalty",
    }
    with pytest.raises(TaskError, match="add1"):
        get_family("div9")


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_load_local_jsonl(tmp_path: Path) -> None:
    # Prepare: a family given on one line, a default for the other, and a blank line.
    path = _write_jsonl(
        tmp_path / "data.jsonl",
        [{"question": "2+2", "answer": 4, "family": "add1"}, "", {"question": "3*3", "answer": 9}],
    )
    # Execute
    got = load_local_examples(path, default_family="mul1")
    # Assert
    assert got == [Example("2+2", 4, "add1"), Example("3*3", 9, "mul1")]


def test_load_local_dataset_folder(tmp_path: Path) -> None:
    # Prepare
    import datasets

    rows = {"question": ["10+11", "40-2"], "answer": [21, 38], "family": ["add2", "sub2"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    # Execute
    got = load_local_examples(tmp_path / "ds")
    # Assert
    assert got == [Example("10+11", 21, "add2"), Example("40-2", 38, "sub2")]


@pytest.mark.parametrize(
    ("bad_line", "needle"),
    [
        ("{not json", "line 2: not valid JSON"),
        ({"answer": 3}, "line 2: missing field 'question'"),
        ({"question": "1+2"}, "line 2: missing field 'answer'"),
        ({"question": "1+2", "answer": "3"}, "line 2: field 'answer' must be an integer"),
        ({"question": "1+2", "answer": 3.0}, "line 2: field 'answer' must be an integer"),
        ({"question": "1+2", "answer": 3, "family": "div9"}, "line 2: field 'family' is 'div9'"),
        ({"question": "1+2", "answer": 3, "family": None}, "line 2: no field 'family'"),
        ([1, 2], "line 2: expected an object"),
    ],
)
def test_load_local_errors_name_file_line_and_field(tmp_path: Path, bad_line: Any, needle: str) -> None:
    # Prepare: line 1 is fine, line 2 is broken.
    path = _write_jsonl(
        tmp_path / "bad.jsonl", [{"question": "1+1", "answer": 2, "family": "add1"}, bad_line]
    )
    # Execute / Assert
    with pytest.raises(TaskError) as info:
        load_local_examples(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_load_local_missing_and_empty(tmp_path: Path) -> None:
    # Execute / Assert
    with pytest.raises(TaskError, match="not found"):
        load_local_examples(tmp_path / "nope.jsonl")
    with pytest.raises(TaskError, match="no examples"):
        load_local_examples(_write_jsonl(tmp_path / "empty.jsonl", [""]))
    assert families.rewards is rewards  # tasks takes its reward ranges from the one registry
