"""One error family for the whole project; every message says what to fix."""

from __future__ import annotations


class FgrpoError(Exception):
    """Base class of every error fgrpo raises on purpose."""


class ConfigError(FgrpoError):
    """A configuration is invalid; the message names the field path."""


class TaskError(FgrpoError):
    """An unknown task family or reward function, or a malformed local dataset."""


class DeltaValidationError(FgrpoError):
    """An adapter delta cannot be used: wrong keys, shapes, dtype, non-finite values, bad hash.

    ``reason`` is a short machine-readable code (``missing_key``, ``extra_key``, ``shape``,
    ``dtype``, ``non_finite``, ``sha256``, ``manifest``, ``stats``, ``norm``, ``decode``), ``key``
    the adapter tensor concerned (if any).
    """

    def __init__(self, reason: str, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.key = key


class AggregationError(FgrpoError):
    """Inputs to an aggregation do not fit together (client sets, weights, keys)."""


class QuorumError(FgrpoError):
    """Fewer valid client deltas than ``min_clients``; the round is not committed."""


class OwnerError(FgrpoError):
    """An owner cannot run this round: its data, reward or model. Permanent: never retried.

    ``kind`` is ``data``, ``reward`` or ``model``; the message says what the owner must fix.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class RoundClosedError(FgrpoError):
    """The coordinator closed round t (its deadline passed) or stopped the session mid-training.

    Not the owner's failure: the coordinator has already recorded the owner as late. The owner
    stops training, uploads nothing for the round and goes on to the next. ``marker`` is
    ``closed`` or ``stopped``.
    """

    def __init__(self, round_idx: int, marker: str, message: str) -> None:
        super().__init__(message)
        self.round_idx = round_idx
        self.marker = marker
