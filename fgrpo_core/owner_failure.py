"""An owner's permanent failure: what an owner records when its data, reward or model cannot run.

The owner writes one ``OwnerFailure`` under its own round prefix; the coordinator reads it for an
owner whose round failed and records ``permanent: <kind>: <message>`` as that owner's reason. A
permanent failure gives the same answer on every try, so nothing retries it; the round goes on
without the owner (quorum rules apply) and `fgrpo run` ends with EXIT_OWNER_FAILED.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from fgrpo_core.errors import ConfigError, OwnerError, TaskError

if TYPE_CHECKING:  # pre-flight loads the data and reward modules; the coordinator needs neither
    from fgrpo_core.preflight import Problem

FailureKind = Literal["data", "reward", "model"]
PERMANENT = "permanent: "
# An owner writes its own record: keep what the coordinator renders short.
MAX_MESSAGE = 2000
# Pre-flight's finer kinds, as the owner must read them: GPU options and LoRA targets are the model's.
_PROBLEM_KIND: dict[str, FailureKind] = {
    "data": "data",
    "reward": "reward",
    "model": "model",
    "lora": "model",
    "gpu": "model",
}


class OwnerFailure(BaseModel):
    """One owner's permanent failure in one round, as written to the store (``failure.json``)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(description="The owner that cannot run.")
    round: int = Field(ge=1, description="The round it failed.")
    kind: FailureKind = Field(description="What the owner must fix: its data, its reward or its model.")
    message: str = Field(max_length=MAX_MESSAGE, description="What is wrong and how to fix it.")

    @property
    def reason(self) -> str:
        """The round table's reason for this owner.

        >>> OwnerFailure(client_id="a", round=1, kind="data", message="x.jsonl:3: no prompt").reason
        'permanent: data: x.jsonl:3: no prompt'
        """
        return f"{PERMANENT}{self.kind}: {self.message}"


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def from_problems(client_id: str, round_idx: int, problems: Sequence[Problem]) -> OwnerFailure | None:
    """The failure pre-flight's ``problems`` mean for this owner (the first one's kind), or None."""
    if not problems:
        return None
    message = "; ".join(p.message for p in problems)
    kind = _PROBLEM_KIND[problems[0].kind]
    return OwnerFailure(client_id=client_id, round=round_idx, kind=kind, message=_short(message))


def classify(err: BaseException) -> FailureKind | None:
    """The permanent kind of an error raised while an owner trains, or None (not known permanent).

    After pre-flight passed, a ``TaskError`` is about the owner's examples (data) and a
    ``ConfigError`` about loading its model; anything else (I/O, a crash) is not judged here.

    >>> classify(TaskError("x.jsonl:3: no 'prompt' column")), classify(ConnectionError("reset"))
    ('data', None)
    """
    if isinstance(err, OwnerError) and err.kind in ("data", "reward", "model"):
        return err.kind  # type: ignore[return-value]
    if isinstance(err, TaskError):
        return "data"
    if isinstance(err, ConfigError):
        return "model"
    return None


def from_error(client_id: str, round_idx: int, err: BaseException) -> OwnerFailure | None:
    """The failure ``err`` means for this owner when it is permanent, else None."""
    kind = classify(err)
    if kind is None:
        return None
    message = _short(f"{type(err).__name__}: {err}" if not isinstance(err, OwnerError) else str(err))
    return OwnerFailure(client_id=client_id, round=round_idx, kind=kind, message=message)


def is_permanent(reason: str) -> bool:
    """Whether a round row's reason records a permanent owner failure."""
    return reason.startswith(PERMANENT)


def permanent_failures(rows: Iterable[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """(round, owner, reason) of every permanent failure among (round, owner, reason) rows."""
    return [(t, cid, reason) for t, cid, reason in rows if is_permanent(reason)]
