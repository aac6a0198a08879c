"""A data owner's own file in the ecosystem's formats: JSONL, JSON, CSV, Parquet or a ``datasets`` folder.

Two record shapes are read:

- TRL's: a ``prompt`` column (a string, or a list of chat messages ``{"role", "content"}``) and
  any other columns, which reach the reward functions as keyword arguments exactly as TRL's
  ``GRPOTrainer`` passes them (``answer`` / ``solution`` are conventional, not required). Such
  records have no task family: the client's configured reward scores them.
- fgrpo's own: ``question``, an integer ``answer`` and optionally ``family`` (``families.py``).

Every error names the file, the record and what to fix; it is raised when the owner's data is
loaded (``preflight`` runs it before round 1).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fgrpo_core.errors import TaskError
from fgrpo_core.families import NO_FAMILY, Example, _dataset_rows, _example_from_row, _jsonl_rows

FORMATS = (".jsonl", ".json", ".csv", ".parquet")
_FIX = "each record needs a 'prompt' (TRL format) or 'question' and 'answer'"


def _json_rows(path: Path) -> Iterable[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TaskError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}); write a list of records"
        ) from err
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise TaskError(
                f"{path}: columns of different lengths {sorted(lengths)}; give every column one value per record"
            )
        names = list(data)
        data = [dict(zip(names, values, strict=True)) for values in zip(*data.values(), strict=True)]
    if not isinstance(data, list):
        raise TaskError(f"{path}: expected a list of records (or an object of equal-length columns)")
    return ((f"{path} record {i}", row) for i, row in enumerate(data))


def _csv_rows(path: Path) -> Iterable[tuple[str, Any]]:
    # Every CSV value is a string: answers stay strings, as TRL users' rewards expect.
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return ((f"{path} row {i + 2}", row) for i, row in enumerate(rows))  # row 1 is the header


def _parquet_rows(path: Path) -> Iterable[tuple[str, Any]]:
    import pyarrow.parquet as pq  # installed with datasets

    table = pq.read_table(path)
    return ((f"{path} row {i}", row) for i, row in enumerate(table.to_pylist()))


def _rows(source: Path) -> list[tuple[str, Any]]:
    if source.is_dir():
        return list(_dataset_rows(source))
    if not source.is_file():
        raise TaskError(
            f"data file not found: {source} (give a {'/'.join(FORMATS)} file or a save_to_disk folder)"
        )
    suffix = source.suffix.lower()
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    if suffix not in readers:
        raise TaskError(
            f"{source}: unsupported format {suffix!r}; use one of {list(FORMATS)} or a save_to_disk folder"
        )
    try:
        return list(readers[suffix](source))
    except TaskError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as err:
        raise TaskError(f"{source}: cannot be read as {suffix[1:]} ({type(err).__name__}: {err})") from err


def _prompt_text(prompt: Any, where: str) -> str:
    """The text of a prompt; TaskError unless it is a non-empty string or a list of messages."""
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    if isinstance(prompt, list) and prompt:
        ok = all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in prompt)
        if ok:
            return "\n".join(str(m["content"]) for m in prompt)
    raise TaskError(
        f"{where}: 'prompt' must be a non-empty string or a list of messages "
        f"[{{'role': 'user', 'content': '...'}}], got {prompt!r:.80}"
    )


def _trl_example(row: dict[str, Any], where: str) -> Example:
    prompt = row["prompt"]
    text = _prompt_text(prompt, where)
    columns = {k: v for k, v in row.items() if k != "prompt"}
    answer = columns.get("answer", columns.get("solution", ""))
    return Example(text, str(answer), NO_FAMILY, prompt=prompt, columns=columns)


def load_owner_examples(path: str | Path, default_family: str | None = None) -> list[Example]:
    """The records of an owner's file or folder, all of one shape, every one with the same columns.

    ``default_family`` is the family of fgrpo-format records without one.
    """
    source = Path(path)
    rows = _rows(source)
    if not rows:
        raise TaskError(f"{source}: no records; {_FIX}")
    first_where, first = rows[0]
    if not isinstance(first, dict):
        raise TaskError(f"{first_where}: expected a record (an object), got {type(first).__name__}")
    trl = "prompt" in first
    if not trl and "question" not in first:
        raise TaskError(f"{first_where}: no 'prompt' column (columns: {sorted(first)}); {_FIX}")
    names = set(first)
    examples: list[Example] = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise TaskError(f"{where}: expected a record (an object), got {type(row).__name__}")
        if trl:
            if set(row) != names:
                raise TaskError(
                    f"{where}: columns {sorted(row)} differ from the first record's {sorted(names)}; "
                    "give every record the same columns (a value may be null)"
                )
            examples.append(_trl_example(row, where))
        else:
            examples.append(_example_from_row(row, where, default_family))
    return examples


def is_own_format(example: Example) -> bool:
    """Whether ``example`` is a TRL-format record (no family: the client's reward scores it)."""
    return example.prompt is not None
