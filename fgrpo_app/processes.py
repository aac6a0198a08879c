"""Processes of the local stack: start one with its log, wait until it answers, stop it and its children.

psutil gives a process's identity (pid plus start time, so a pid that the kernel has reused for
another process is never signalled), its descendants and the two-phase kill. Linux only
where noted: two corner cases of zombies are read from /proc through psutil's own calls.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from fgrpo_core.errors import FgrpoError

HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
KILL_WAIT_S = 5.0
_POLL_S = 0.05
# Start times come in clock ticks (1/100 s): two processes differ by at least one tick.
_SAME_START_S = 1e-3


class StackError(FgrpoError):
    """The local stack cannot be started, stopped or read; the message says what to fix."""


@dataclass
class Component:
    """One process started by `up`."""

    name: str
    pid: int
    started_s: float  # seconds after boot the process started: guards against a reused pid
    url: str
    log: str


def started_s(pid: int) -> float:
    """Seconds after boot that `pid` started (-1.0 when it is already gone).

    psutil's public `create_time()` is boot time + this, and boot time moves with the system
    clock (NTP steps): a stack started before a clock change would not recognise its own
    processes. psutil's own identity check uses the offset from boot, but only privately.
    """
    try:
        return psutil.Process(pid).create_time() - psutil.boot_time()
    except psutil.NoSuchProcess:
        return -1.0


def _process(comp: Component) -> psutil.Process | None:
    """The component's process, or None when it is gone or its pid now belongs to another one."""
    try:
        proc = psutil.Process(comp.pid)
    except psutil.NoSuchProcess:
        return None
    try:
        started = proc.create_time() - psutil.boot_time()
    except psutil.NoSuchProcess:
        return None
    return proc if abs(started - comp.started_s) < _SAME_START_S else None  # else a reused pid


def _running(proc: psutil.Process) -> bool:
    """Whether `proc` still runs: not gone and not a finished zombie (a zombie of ours is reaped here)."""
    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.NoSuchProcess:
        return False
    # psutil reads the main thread's state: "zombie" while other threads still run (a server
    # shutting down) means the process has not ended. psutil has no call for that case, so:
    # 1. reap it if it is our finished child (`wait(timeout=0)` is a non-blocking waitpid);
    with contextlib.suppress(psutil.TimeoutExpired):
        proc.wait(timeout=0)
        return False
    # 2. otherwise it is our child whose other threads run, or another parent's zombie (`up` ran in
    #    another process; PID 1 here never reaps orphans): it runs while a thread besides the
    #    leader is listed in /proc/<pid>/task.
    try:
        return any(thread.id != proc.pid for thread in proc.threads())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def is_alive(comp: Component) -> bool:
    """Whether the process `up` started still runs (same pid and same start time)."""
    proc = _process(comp)
    return proc is not None and _running(proc)


def _signal_and_wait(
    comp: Component, family: list[psutil.Process], sig: signal.Signals, wait_s: float
) -> list[psutil.Process]:
    """Send `sig` to the component's process group and `family`; return those still running after `wait_s`."""
    # psutil signals one process at a time; the group also catches a child forked after `family`
    # was listed. The component was started with its own session, so its pgid is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(comp.pid, sig)
    for proc in family:
        # psutil checks the start time first: a reused pid is not signalled.
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(sig)
    deadline = time.monotonic() + wait_s
    alive = family
    while alive:
        # wait_procs reaps our children; another parent's zombie never leaves its list (psutil
        # polls that the pid exists), so `_running` decides what still runs.
        _, alive = psutil.wait_procs(alive, timeout=_POLL_S)
        alive = [p for p in alive if _running(p)]
        if time.monotonic() >= deadline:
            break
    return alive


def stop(comp: Component, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the component's process group and descendants, then SIGKILL what remains."""
    proc = _process(comp)
    if proc is None or not _running(proc):
        return
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = [proc]
    left = _signal_and_wait(comp, family, signal.SIGTERM, grace_s)
    if left:
        # SIGKILL is delivered asynchronously too: return only once the family is gone (or stuck in D).
        _signal_and_wait(comp, left, signal.SIGKILL, KILL_WAIT_S)


def spawn(name: str, cmd: list[str], env: dict[str, str], stack_dir: Path, url: str) -> Component:
    log = stack_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=stack_dir,
            start_new_session=True,
        )
    comp = Component(name=name, pid=proc.pid, started_s=started_s(proc.pid), url=url, log=str(log))
    pid_file = stack_dir / "pids" / f"{name}.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{proc.pid}\n")
    return comp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_http(comp: Component, url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(comp):
            raise StackError(f"{comp.name} exited while starting; see its log {comp.log}:\n{tail(comp.log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as err:
            if err.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise StackError(f"{comp.name} not ready at {url} after {timeout_s:.0f} s; see {comp.log}")


def tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
