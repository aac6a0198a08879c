"""The local stack's process handling: stop means gone, zombies are reaped, reused pids are left alone."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from fgrpo import processes

# A process that ignores SIGTERM, so only the SIGKILL after the grace period ends it.
_STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"


def _spawn_stubborn(tmp_path: Path) -> processes.Component:
    comp = processes.spawn("stubborn", [sys.executable, "-c", _STUBBORN], dict(os.environ), tmp_path, url="")
    deadline = time.monotonic() + 30
    while "ready" not in Path(comp.log).read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # the SIGTERM handler must be installed before stop() sends SIGTERM
    return comp


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def test_stop_returns_only_once_a_sigkilled_process_is_gone(tmp_path: Path) -> None:
    # Prepare
    comp = _spawn_stubborn(tmp_path)
    assert processes.is_alive(comp)
    # Execute
    processes.stop(comp, grace_s=0.3)
    # Assert: no dying process and no zombie left behind, at once (the CI failure of stop 8).
    with pytest.raises(ProcessLookupError):
        os.kill(comp.pid, 0)
    assert not processes.is_alive(comp)


def test_a_zombie_child_counts_as_stopped_and_is_reaped(tmp_path: Path) -> None:
    # Prepare: kill our child and wait, without reaping, until the kernel shows it as a zombie.
    comp = _spawn_stubborn(tmp_path)
    os.kill(comp.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _state(comp.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(comp.pid) == "Z"
    # Execute
    alive = processes.is_alive(comp)
    # Assert
    assert not alive
    with pytest.raises(ProcessLookupError):
        os.kill(comp.pid, 0)


def test_a_reused_pid_is_neither_alive_nor_signalled(tmp_path: Path) -> None:
    # Prepare: a component whose pid now belongs to another process (a different start time).
    other = _spawn_stubborn(tmp_path)
    stale = processes.Component("old", other.pid, other.start_ticks - 1, url="", log=other.log)
    try:
        # Execute
        processes.stop(stale, grace_s=0.1)
        # Assert
        assert not processes.is_alive(stale)
        assert processes.is_alive(other)
    finally:
        processes.stop(other, grace_s=0.1)
    assert not processes.is_alive(other)
