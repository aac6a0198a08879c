"""Faults injected through a client's reward function, given by dotted path in its config.

`clients[].reward: tests.fault_hooks.<name>` needs no production hook: the client calls its reward
in its first evaluation, during training and in its last evaluation, inside the embedded client
task. Unarmed, `hanging_exact` and `outage_exact` are `exact` itself (range {0, 1}, like the
`add1` family's reward), so a run that uses them computes what the plain config computes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgrpo_core.rewards import Completion, exact

CRASH_MESSAGE = "injected crash: the owner's process died mid-round"


def crashing_exact(completions: Sequence[Completion], **kwargs: Any) -> list[float | None]:
    """A client whose training crashes: its first reward call raises."""
    raise RuntimeError(CRASH_MESSAGE)


@dataclass
class _Hang:
    release_when: Path | None = None  # the hang ends when this file exists ...
    max_s: float = 0.0  # ... or after this many seconds, whichever comes first


HANG = _Hang()
_hang_lock = threading.Lock()


def arm_hang(release_when: Path, max_s: float) -> None:
    """The next call of `hanging_exact` blocks until ``release_when`` exists (at most ``max_s``)."""
    with _hang_lock:
        HANG.release_when, HANG.max_s = release_when, max_s


def hanging_exact(completions: Sequence[Completion], **kwargs: Any) -> list[float | None]:
    """A client that hangs once (bounded), then goes on as if nothing happened."""
    with _hang_lock:
        release, max_s = HANG.release_when, HANG.max_s
        HANG.release_when = None
    if release is not None:
        started = time.monotonic()
        while not release.exists() and time.monotonic() - started < max_s:
            time.sleep(0.05)
    return exact(completions, **kwargs)


@dataclass
class _Outage:
    start: Callable[[], None] | None = None  # called once, at the client's last evaluation
    evaluations: int = 0


OUTAGE = _Outage()


def arm_outage(start: Callable[[], None]) -> None:
    """At the client's second evaluation (after training, just before its upload) call ``start``."""
    OUTAGE.start, OUTAGE.evaluations = start, 0


def outage_exact(completions: Sequence[Completion], **kwargs: Any) -> list[float | None]:
    """`exact`, plus an S3 outage that begins right before this client uploads its delta."""
    if "completion_ids" not in kwargs:  # an evaluation call (training calls carry completion_ids)
        OUTAGE.evaluations += 1
        if OUTAGE.evaluations == 2 and OUTAGE.start is not None:
            start, OUTAGE.start = OUTAGE.start, None
            start()
    return exact(completions, **kwargs)
