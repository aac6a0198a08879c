"""The local stack's process handling: stop means gone, zombies are reaped, reused pids are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fgrpo_app import processes

# A process that ignores SIGTERM, so only the SIGKILL after the grace period ends it.
_STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"


# A process whose main thread ends while another thread runs on: /proc shows it as "Z" although
# it has not ended and cannot be reaped yet (a server shutting down looks like this).
_LEADERLESS = (
    "import ctypes, pathlib, sys, threading, time; "
    "threading.Thread(target=time.sleep, args=(60,)).start(); "
    "pathlib.Path(sys.argv[1]).write_text('ready'); "
    "ctypes.CDLL(None).pthread_exit(None)"
)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"


def _spawn_stubborn(tmp_path: Path) -> processes.Component:
    comp = processes.spawn("stubborn", [sys.executable, "-c", _STUBBORN], dict(os.environ), tmp_path, url="")
    deadline = time.monotonic() + 30
    while "ready" not in Path(comp.log).read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # the SIGTERM handler must be installed before stop() sends SIGTERM
    return comp


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat from the state field on (field 3 of proc(5) is index 0)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _state(pid: int) -> str:
    return _stat(pid)[0]


def _wait_zombie(pid: int) -> None:
    """Until /proc shows `pid`'s main thread as "Z" (we reap nothing meanwhile)."""
    deadline = time.monotonic() + 10
    while _state(pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(pid) == "Z"


def test_stop_returns_only_once_a_sigkilled_process_is_gone(tmp_path: Path) -> None:
    # Prepare
    comp = _spawn_stubborn(tmp_path)
    assert processes.is_alive(comp)
    # Execute
    processes.stop(comp, grace_s=0.3)
    # Assert: no dying process and no zombie left behind, at once.
    with pytest.raises(ProcessLookupError):
        os.kill(comp.pid, 0)
    assert not processes.is_alive(comp)


def test_a_zombie_child_counts_as_stopped_and_is_reaped(tmp_path: Path) -> None:
    # Prepare: kill our child and wait, without reaping, until the kernel shows it as a zombie.
    comp = _spawn_stubborn(tmp_path)
    os.kill(comp.pid, signal.SIGKILL)
    _wait_zombie(comp.pid)
    # Execute
    alive = processes.is_alive(comp)
    # Assert
    assert not alive
    with pytest.raises(ProcessLookupError):
        os.kill(comp.pid, 0)


def test_a_reused_pid_is_neither_alive_nor_signalled(tmp_path: Path) -> None:
    # Prepare: a component whose pid now belongs to another process (a different start time).
    other = _spawn_stubborn(tmp_path)
    stale = processes.Component("old", other.pid, other.started_s - 1, url="", log=other.log)
    try:
        # Execute
        processes.stop(stale, grace_s=0.1)
        # Assert
        assert not processes.is_alive(stale)
        assert processes.is_alive(other)
    finally:
        processes.stop(other, grace_s=0.1)
    assert not processes.is_alive(other)


def test_a_child_whose_main_thread_ended_still_runs_until_stopped(tmp_path: Path) -> None:
    # Prepare: our child, "Z" in /proc while its second thread sleeps (waitpid cannot reap it yet).
    ready = tmp_path / "ready"
    comp = processes.spawn(
        "leaderless", [sys.executable, "-c", _LEADERLESS, str(ready)], dict(os.environ), tmp_path, url=""
    )
    _wait_for(ready)
    _wait_zombie(comp.pid)
    # Execute
    alive_before = processes.is_alive(comp)
    processes.stop(comp, grace_s=1.0)
    # Assert: it counted as running (the stop-8 CI failure: `down` left such a process behind).
    assert alive_before
    assert not processes.is_alive(comp)
    with pytest.raises(ProcessLookupError):
        os.kill(comp.pid, 0)


def test_a_process_of_another_parent_whose_main_thread_ended_still_runs(tmp_path: Path) -> None:
    # Prepare: started by a process that exits at once (as after `fgrpo stack up` in another
    # shell), so the process is not our child and waitpid cannot tell whether it has ended.
    ready = tmp_path / "ready"
    launch = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], start_new_session=True, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(p.pid)"
    )
    out = subprocess.run(
        [sys.executable, "-c", launch, _LEADERLESS, str(ready)], capture_output=True, text=True, check=True
    )
    pid = int(out.stdout)
    comp = processes.Component("leaderless", pid, started_s=processes.started_s(pid), url="", log="")
    _wait_for(ready)
    _wait_zombie(comp.pid)
    # Execute
    alive_before = processes.is_alive(comp)
    processes.stop(comp, grace_s=1.0)
    # Assert: a zombie left for a parent that never reaps is not running either.
    assert alive_before
    assert not processes.is_alive(comp)
