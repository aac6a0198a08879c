"""Where an experiment's wall time goes: each task times its own parts, the flows add them up.

A task starts a ``Stopwatch`` named after its main part (``train_s`` for a client, ``aggregate_s``
for the coordinator's arithmetic and validation, ...), reads and writes the store through
``Stopwatch.store`` (a ``TimedStore``: pure store I/O goes to ``store_io_s``), borrows its model
with the stopwatch (a load goes to ``model_load_s``), and returns ``Stopwatch.result()``: a small
dict of seconds in which everything the task did that no other part claimed counts as its main
part. The flows sum those dicts; the caller that knows the wall time adds ``orchestration_s``,
what is left: Prefect's task and flow runs, the ephemeral API, thread hand-offs, and a few small
bookkeeping reads (last committed round, round reports) made outside any stopwatch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from fgrpo_io.store import ObjectStore

Timings = dict[str, float]

# The measured parts, in the order a summary prints them; orchestration_s is what remains.
PARTS = ("train_s", "aggregate_s", "evaluate_s", "store_io_s", "mlflow_s", "model_load_s")
ORCHESTRATION = "orchestration_s"


class Stopwatch:
    """Seconds one task spends in its parts; what no part claims counts as ``main``.

    Parts must not nest (a store call inside ``part("mlflow_s")`` would count twice).
    """

    def __init__(self, main: str) -> None:
        if main not in PARTS:
            raise ValueError(f"unknown timing part {main!r}; use one of {PARTS}")
        self.main = main
        self.started = time.perf_counter()
        self.parts: Timings = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to part ``name``."""
        if name not in PARTS:
            raise ValueError(f"unknown timing part {name!r}; use one of {PARTS}")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t0

    def store(self, inner: ObjectStore) -> TimedStore:
        """``inner`` with every call counted as ``store_io_s``."""
        return TimedStore(inner, self)

    def result(self) -> Timings:
        """Every part of PARTS (0.0 when unused); the main part takes the unclaimed time."""
        elapsed = time.perf_counter() - self.started
        out = {name: self.parts.get(name, 0.0) for name in PARTS}
        claimed = sum(v for k, v in out.items() if k != self.main)
        out[self.main] += max(0.0, elapsed - claimed - out[self.main])
        return out


class TimedStore:
    """An ObjectStore whose calls add their seconds to a stopwatch's ``store_io_s``."""

    def __init__(self, inner: ObjectStore, clock: Stopwatch) -> None:
        self.inner = inner
        self.clock = clock

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        with self.clock.part("store_io_s"):
            self.inner.put_bytes(key, data, overwrite=overwrite)

    def get_bytes(self, key: str) -> bytes:
        with self.clock.part("store_io_s"):
            return self.inner.get_bytes(key)

    def exists(self, key: str) -> bool:
        with self.clock.part("store_io_s"):
            return self.inner.exists(key)

    def list_keys(self, prefix: str) -> list[str]:
        with self.clock.part("store_io_s"):
            return self.inner.list_keys(prefix)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)


def add(timings: Iterable[Mapping[str, float]]) -> Timings:
    """Part-by-part sum of several tasks' timings."""
    out = dict.fromkeys(PARTS, 0.0)
    for item in timings:
        for name, seconds in item.items():
            if name not in out:
                raise ValueError(f"unknown timing part {name!r}; use one of {PARTS}")
            out[name] += float(seconds)
    return out


def fit_to_wall(timings: Mapping[str, float], wall_s: float) -> Timings:
    """Scale parts that ran concurrently (clients in parallel) down to the wall time they took.

    Unchanged when their sum fits in ``wall_s`` (sequential clients).
    """
    total = sum(timings.values())
    factor = wall_s / total if total > wall_s > 0 else 1.0
    return {name: seconds * factor for name, seconds in timings.items()}


def with_orchestration(timings: Mapping[str, float], wall_s: float) -> Timings:
    """The parts plus ``orchestration_s`` = wall time - their sum (never below 0), rounded to ms."""
    parts = add([timings])
    parts[ORCHESTRATION] = max(0.0, wall_s - sum(parts.values()))
    return {name: round(seconds, 3) for name, seconds in parts.items()}


def summary_line(timings: Mapping[str, float]) -> str:
    """``train 12.3 s (45%) | aggregate ...`` for the human summary."""
    total = sum(timings.values()) or 1.0
    cells = [
        f"{name.removesuffix('_s').replace('_', ' ')} {seconds:.1f} s ({100 * seconds / total:.0f}%)"
        for name, seconds in timings.items()
    ]
    return " | ".join(cells)
