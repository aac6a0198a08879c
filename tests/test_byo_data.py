"""An owner's own data in TRL's format, in every file format, and every bad-data message."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from fgrpo_core.config import parse_config
from fgrpo_core.errors import TaskError
from fgrpo_core.families import NO_FAMILY
from fgrpo_core.owner_data import load_owner_examples
from fgrpo_core.partition import client_data

ROWS = [{"prompt": f"What is {i} + 3?", "answer": str(i + 3), "topic": "sum"} for i in range(10)]
CHAT_ROWS = [{"prompt": [{"role": "user", "content": f"{i}+1?"}], "solution": str(i + 1)} for i in range(6)]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` in the format the suffix names (a folder: datasets.save_to_disk)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        from datasets import Dataset

        Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("name", ["own.jsonl", "own.json", "own.csv", "own.parquet", "own_ds"])
def test_trl_format_reads_the_same_in_every_file_format(name: str, tmp_path: Path) -> None:
    # Execute
    examples = load_owner_examples(write(tmp_path / name, ROWS))
    # Assert: the prompt kept, every other column kept as a string answer, no family.
    assert [ex.prompt for ex in examples] == [r["prompt"] for r in ROWS]
    assert [ex.columns for ex in examples] == [{"answer": r["answer"], "topic": "sum"} for r in ROWS]
    assert {ex.family for ex in examples} == {NO_FAMILY}
    assert [ex.answer for ex in examples] == [r["answer"] for r in ROWS]


def test_chat_prompts_and_columns_without_answer(tmp_path: Path) -> None:
    # Execute
    examples = load_owner_examples(write(tmp_path / "chat.jsonl", CHAT_ROWS))
    # Assert: a message list is kept as is; 'solution' is just another column.
    assert examples[2].prompt == [{"role": "user", "content": "2+1?"}]
    assert examples[2].question == "2+1?" and examples[2].columns == {"solution": "3"}


def test_owner_split_is_seeded_and_held_out(tmp_path: Path) -> None:
    # Prepare
    path = write(tmp_path / "own.jsonl", ROWS)
    client = {"id": "own", "data_path": str(path), "n_val": 3, "reward": "exact"}
    cfg = parse_config({"name": "t", "clients": [client], "data": {"families": ["add1"]}})
    # Execute
    data = client_data(cfg, "own")
    # Assert: 3 validation prompts apart from 7 training prompts, the same split every time.
    assert len(data.val) == 3 and len(data.train) == 7
    assert not {e.question for e in data.val} & {e.question for e in data.train}
    assert data == client_data(cfg, "own") and data.mix == {NO_FAMILY: 7}


def test_legacy_question_answer_family_records_still_load(tmp_path: Path) -> None:
    # Prepare
    rows = [
        {"question": "1+2", "answer": 3, "family": "add1"},
        {"question": "2*3", "answer": 6, "family": "mul1"},
    ]
    # Execute
    examples = load_owner_examples(write(tmp_path / "old.jsonl", rows))
    # Assert
    assert [(e.question, e.answer, e.family, e.prompt) for e in examples] == [
        ("1+2", 3, "add1", None),
        ("2*3", 6, "mul1", None),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "a.jsonl",
            '{"text": "hi", "answer": "1"}\n',
            r"a\.jsonl line 1: no 'prompt' column \(columns: \['answer', 'text'\]\)",
        ),
        ("b.jsonl", "", r"b\.jsonl: no records; each record needs a 'prompt'"),
        ("c.csv", "prompt,answer\n", r"c\.csv: no records"),
        ("d.json", "{not json", r"d\.json: not valid JSON"),
        ("e.parquet", "not parquet", r"e\.parquet: cannot be read as parquet"),
        ("f.txt", "prompt", r"f\.txt: unsupported format '\.txt'"),
        (
            "g.jsonl",
            '{"prompt": "a", "answer": "1"}\n{"prompt": "b"}\n',
            r"g\.jsonl line 2: columns \['prompt'\] differ",
        ),
        (
            "h.jsonl",
            '{"prompt": "", "answer": "1"}\n',
            r"h\.jsonl line 1: 'prompt' must be a non-empty string",
        ),
        (
            "i.jsonl",
            '{"prompt": [{"content": "x"}]}\n',
            r"i\.jsonl line 1: 'prompt' must be .* list of messages",
        ),
    ],
)
def test_bad_data_names_the_file_and_what_to_fix(
    name: str, content: str, message: str, tmp_path: Path
) -> None:
    # Prepare
    path = tmp_path / name
    path.write_text(content)
    # Execute / Assert
    with pytest.raises(TaskError, match=message):
        load_owner_examples(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    # Execute / Assert
    with pytest.raises(TaskError, match=r"data file not found: .*nope\.jsonl"):
        load_owner_examples(tmp_path / "nope.jsonl")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(TaskError, match="save_to_disk"):
        load_owner_examples(tmp_path / "empty_dir")
