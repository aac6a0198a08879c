"""The wall-time split: a task's stopwatch, the timed store, and the run-wide collector."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgrpo_io import timing
from fgrpo_io.store import LocalStore, ObjectNotFoundError
from fgrpo_io.timing import ORCHESTRATION, PARTS, Stopwatch, add, fit_to_wall, with_orchestration


class FakeClock:
    """A perf_counter that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SlowStore(LocalStore):
    """A local store whose every call takes ``seconds`` on the fake clock."""

    def __init__(self, root: Path, clock: FakeClock, seconds: float) -> None:
        super().__init__(root)
        self.clock, self.seconds = clock, seconds

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        self.clock.advance(self.seconds)
        super().put_bytes(key, data, overwrite=overwrite)

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        self.clock.advance(self.seconds)
        return super().get_bytes(key, max_bytes)

    def exists(self, key: str) -> bool:
        self.clock.advance(self.seconds)
        return super().exists(key)

    def list_keys(self, prefix: str) -> list[str]:
        self.clock.advance(self.seconds)
        return super().list_keys(prefix)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


def test_main_part_takes_the_time_no_other_part_claims(clock: FakeClock) -> None:
    # Prepare
    watch = Stopwatch("train_s")
    # Execute: 1 s unclaimed, 2 s of model load, 3 s unclaimed, 0.5 s of MLflow.
    clock.advance(1.0)
    with watch.part("model_load_s"):
        clock.advance(2.0)
    clock.advance(3.0)
    with watch.part("mlflow_s"):
        clock.advance(0.5)
    result = watch.result()
    # Assert: every part is reported; the main part is elapsed minus the claimed parts.
    assert set(result) == set(PARTS)
    assert result["model_load_s"] == pytest.approx(2.0)
    assert result["mlflow_s"] == pytest.approx(0.5)
    assert result["train_s"] == pytest.approx(6.5 - 2.0 - 0.5)
    assert sum(result.values()) == pytest.approx(6.5)


def test_timed_store_counts_every_call_of_a_timed_task(clock: FakeClock, tmp_path: Path) -> None:
    # Prepare: each store call takes 0.25 s; the task does 1 s of its own work.
    store = timing.TimedStore(SlowStore(tmp_path, clock, 0.25))

    @timing.timed("aggregate_s")
    def task() -> tuple[bytes, bool, list[str]]:
        store.put_bytes("exp/a.bin", b"abc")
        out = store.get_bytes("exp/a.bin"), store.exists("exp/a.bin"), store.list_keys("exp/")
        clock.advance(1.0)
        return out

    # Execute
    with timing.collect() as collected:
        data, there, keys = task()
    # Assert: results pass through; the collector got the task's split.
    assert (data, there, keys) == (b"abc", True, ["exp/a.bin"])
    assert store.uri("exp/a.bin") == (tmp_path / "exp/a.bin").resolve().as_uri()
    assert collected.totals["store_io_s"] == pytest.approx(4 * 0.25)
    assert collected.totals["aggregate_s"] == pytest.approx(1.0)


def test_a_failing_task_and_its_failing_store_call_still_count(clock: FakeClock, tmp_path: Path) -> None:
    # Prepare
    store = timing.TimedStore(SlowStore(tmp_path, clock, 0.5))

    @timing.timed("evaluate_s")
    def task() -> bytes:
        return store.get_bytes("exp/missing.bin")

    # Execute
    with timing.collect() as collected, pytest.raises(ObjectNotFoundError, match="no object"):
        task()
    # Assert
    assert collected.totals["store_io_s"] == pytest.approx(0.5)


def test_concurrent_work_is_scaled_to_its_wall_time_and_waits_are_recorded(clock: FakeClock) -> None:
    # Prepare: two "parallel" tasks of 3 s each that took 4 s of wall time together.
    @timing.timed("train_s")
    def client() -> None:
        clock.advance(3.0)

    # Execute
    with timing.collect() as collected:
        with timing.concurrent():
            client()
            client()
            clock.now -= 2.0  # the fake clock ran them one after the other: 6 s; the wall saw 4 s
        timing.record("train_s", 1.5)  # e.g. a wait for remote owners
    # Assert
    assert collected.totals["train_s"] == pytest.approx(4.0 + 1.5)
    # Outside any collector nothing is recorded and nothing fails.
    client()
    timing.record("train_s", 1.0)


def test_unknown_part_is_refused() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="unknown timing part 'gpu_s'"):
        Stopwatch("gpu_s")
    with pytest.raises(ValueError, match="unknown timing part 'gpu_s'"):
        add([{"gpu_s": 1.0}])


def test_add_sums_part_by_part() -> None:
    # Prepare
    items = [{"train_s": 1.5, "store_io_s": 0.25}, {"train_s": 2.0, "mlflow_s": 0.5}, {}]
    # Execute
    total = add(items)
    # Assert: against a plain per-key sum.
    reference = {p: sum(i.get(p, 0.0) for i in items) for p in PARTS}
    assert total == pytest.approx(reference)


def test_parallel_clients_are_scaled_to_the_wall_time_they_took() -> None:
    # Prepare: three clients of 4 s each (training 3 s + I/O 1 s) that ran in 6 s of wall time.
    clients = add([{"train_s": 3.0, "store_io_s": 1.0}] * 3)
    # Execute
    parallel = fit_to_wall(clients, 6.0)
    sequential = fit_to_wall(clients, 12.5)
    # Assert: proportions kept, sum = wall; a sequential fan-out is left as measured.
    assert sum(parallel.values()) == pytest.approx(6.0)
    assert parallel["train_s"] / parallel["store_io_s"] == pytest.approx(3.0)
    assert sequential == clients


def test_orchestration_is_the_rest_of_the_wall_time() -> None:
    # Prepare
    parts = {"train_s": 10.0, "evaluate_s": 2.0, "mlflow_s": 1.25}
    # Execute
    split = with_orchestration(parts, 15.0)
    over = with_orchestration(parts, 12.0)
    # Assert
    assert split[ORCHESTRATION] == pytest.approx(15.0 - 13.25)
    assert sum(split.values()) == pytest.approx(15.0)
    assert set(split) == {*PARTS, ORCHESTRATION}
    assert over[ORCHESTRATION] == 0.0


def test_summary_line_lists_parts_with_shares() -> None:
    # Execute
    line = timing.summary_line({"train_s": 3.0, "orchestration_s": 1.0})
    # Assert
    assert line == "train 3.0 s (75%) | orchestration 1.0 s (25%)"
