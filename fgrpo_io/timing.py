"""Where an experiment's wall time goes: one run-wide collector, fed by timed tasks.

``collect()`` opens a collector for everything run inside it (``fgrpo run``, a benchmark). A
function decorated with ``@timed("train_s")`` (every Prefect task that works) runs under a
``Stopwatch`` named after its main part; store calls through a ``TimedStore`` count as
``store_io_s`` and ``part("model_load_s")`` claims a model load, both found through a context
variable, so nothing passes a clock around. When the function returns (or fails), its parts are
added to the collector: flows never touch timings. Work that ran concurrently (clients in parallel
threads) is timed inside ``concurrent()``, which scales its parts to the wall time they took; the
coordinator's wait for remote owners is ``record``ed as ``train_s``. The caller that knows the wall
time adds ``orchestration_s``, the rest: Prefect's task and flow runs, the ephemeral API, thread
hand-offs. A round's MLflow record runs alongside the next round: its ``mlflow_s`` counts in full,
so the overlap it hides shows as a smaller ``orchestration_s``, never as a missing part. Prefect
runs tasks in threads with a copy of the submitting context, so they see it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from fgrpo_io.store import ObjectStore

Timings = dict[str, float]
P = ParamSpec("P")
R = TypeVar("R")

# The measured parts, in the order a summary prints them; orchestration_s is what remains.
PARTS = ("train_s", "aggregate_s", "evaluate_s", "store_io_s", "mlflow_s", "model_load_s")
ORCHESTRATION = "orchestration_s"


def _check_part(name: str) -> str:
    if name not in PARTS:
        raise ValueError(f"unknown timing part {name!r}; use one of {PARTS}")
    return name


class Stopwatch:
    """Seconds one task spends in its parts; what no part claims counts as ``main``.

    Parts must not nest (a store call inside ``part("mlflow_s")`` would count twice).
    """

    def __init__(self, main: str) -> None:
        self.main = _check_part(main)
        self.started = time.perf_counter()
        self.parts: Timings = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to part ``name``."""
        _check_part(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t0

    def result(self) -> Timings:
        """Every part of PARTS (0.0 when unused); the main part takes the unclaimed time."""
        elapsed = time.perf_counter() - self.started
        out = {name: self.parts.get(name, 0.0) for name in PARTS}
        claimed = sum(v for k, v in out.items() if k != self.main)
        out[self.main] += max(0.0, elapsed - claimed - out[self.main])
        return out


class Collector:
    """A thread-safe part-by-part sum of every timed function run under it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: Timings = dict.fromkeys(PARTS, 0.0)

    def add(self, timings: Mapping[str, float]) -> None:
        summed = add([timings])
        with self._lock:
            for name, seconds in summed.items():
                self.totals[name] += seconds


_collector: ContextVar[Collector | None] = ContextVar("fgrpo_timing_collector", default=None)
_watch: ContextVar[Stopwatch | None] = ContextVar("fgrpo_timing_watch", default=None)


@contextmanager
def collect() -> Iterator[Collector]:
    """Collect the timings of everything run inside the block (and its Prefect tasks)."""
    collector = Collector()
    token = _collector.set(collector)
    try:
        yield collector
    finally:
        _collector.reset(token)


def record(name: str, seconds: float) -> None:
    """Add ``seconds`` to part ``name`` of the current collector (none open: nothing happens)."""
    collector = _collector.get()
    if collector is not None:
        collector.add({_check_part(name): seconds})


@contextmanager
def concurrent() -> Iterator[None]:
    """Timed work started in this block ran in parallel: scale its sum to the block's wall time."""
    outer = _collector.get()
    inner = Collector()
    token = _collector.set(inner)
    started = time.perf_counter()
    try:
        yield
    finally:
        _collector.reset(token)
        if outer is not None:
            outer.add(fit_to_wall(inner.totals, time.perf_counter() - started))


def timed(main: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the function under a Stopwatch of main part ``main``; add its parts to the collector."""
    _check_part(main)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        # The wrapper refers to nothing but this module's function: a task shipped to another
        # process (Dask owner workers) is pickled by value, and a ContextVar cannot be.
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return _run_timed(main, fn, *args, **kwargs)

        return wrapper

    return decorate


def _run_timed(main: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    watch = Stopwatch(main)
    token = _watch.set(watch)
    try:
        return fn(*args, **kwargs)
    finally:
        _watch.reset(token)
        collector = _collector.get()
        if collector is not None:
            collector.add(watch.result())


@contextmanager
def part(name: str) -> Iterator[None]:
    """Claim the block's time for part ``name`` of the running timed function (if any)."""
    watch = _watch.get()
    if watch is None:
        yield
        return
    with watch.part(name):
        yield


class TimedStore:
    """An ObjectStore whose calls count as ``store_io_s`` of the running timed function."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        with part("store_io_s"):
            self.inner.put_bytes(key, data, overwrite=overwrite)

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        with part("store_io_s"):
            return self.inner.get_bytes(key, max_bytes)

    def exists(self, key: str) -> bool:
        with part("store_io_s"):
            return self.inner.exists(key)

    def list_keys(self, prefix: str) -> list[str]:
        with part("store_io_s"):
            return self.inner.list_keys(prefix)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)


def add(timings: Iterable[Mapping[str, float]]) -> Timings:
    """Part-by-part sum of several tasks' timings."""
    out = dict.fromkeys(PARTS, 0.0)
    for item in timings:
        for name, seconds in item.items():
            out[_check_part(name)] += float(seconds)
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
