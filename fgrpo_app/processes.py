"""Processes of the local stack: start one with its log, wait until it answers, stop it and its children.

Linux only: a process's identity is its pid plus its start time from /proc, so a pid that the
kernel has reused for another process is never signalled.
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

from fgrpo_core.errors import FgrpoError

HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
KILL_WAIT_S = 5.0


class StackError(FgrpoError):
    """The local stack cannot be started, stopped or read; the message says what to fix."""


@dataclass
class Component:
    """One process started by `up`."""

    name: str
    pid: int
    start_ticks: int  # process start time from /proc: guards against a reused pid
    url: str
    log: str


def _start_ticks(pid: int) -> int:
    """Start time of `pid` in clock ticks since boot (0 where /proc is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return -1
    except OSError:
        return 0
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    return int(stat.rpartition(")")[2].split()[19])


def _running(pid: int) -> bool:
    """Whether `pid` still runs: not gone and not a finished zombie (a zombie of ours is reaped here)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if fields[0] != "Z":
        return True
    # "Z" is the main thread's state: while other threads still run (a server shutting down) the
    # process has not ended. Reap only after seeing it: reaping first races with a dying process.
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped == 0  # 0: our child, not yet reapable
    except ChildProcessError:
        pass  # not our child (`up` ran in another process): its parent reaps it
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    return any(task != str(pid) for task in tasks)


def is_alive(comp: Component) -> bool:
    """Whether the process `up` started still runs (same pid and same start time)."""
    ticks = _start_ticks(comp.pid)
    if ticks == -1:
        return False
    if ticks != 0 and ticks != comp.start_ticks:
        return False  # the pid was reused by another process
    return _running(comp.pid)


def _descendants(pid: int) -> list[int]:
    """Pids of `pid`'s children, grandchildren, ... (a worker's flow runs, uvicorn workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _signal_and_wait(comp: Component, family: list[int], sig: signal.Signals, wait_s: float) -> None:
    """Send `sig` to the component's process group and `family`; wait until they are gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(comp.pid, sig)  # started with its own session: pgid == pid
    _signal_all(family, sig)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(_running(p) for p in family):
        time.sleep(0.05)


def stop(comp: Component, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the component's process group and descendants, then SIGKILL what remains."""
    if not is_alive(comp):
        return
    family = [comp.pid, *_descendants(comp.pid)]
    _signal_and_wait(comp, family, signal.SIGTERM, grace_s)
    # SIGKILL is delivered asynchronously too: return only once the family is gone (or stuck in D).
    _signal_and_wait(comp, family, signal.SIGKILL, KILL_WAIT_S)


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
    comp = Component(name=name, pid=proc.pid, start_ticks=_start_ticks(proc.pid), url=url, log=str(log))
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
