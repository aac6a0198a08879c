"""`fgrpo run`'s live view: round k of R, each owner's state, one line per round as it commits.

Fed by fgrpo_io/runtime.py's two hooks: the training-step hook (tasks/train.py) and the event hook
(``ROUND_COMMITTED`` from the round flow, ``CLIENT_STATE`` from the tasks). On a terminal it is a
rich ``Live`` table redrawn in place; elsewhere (CI, a log file) plain lines, training steps at
most one per owner every ``plain_interval_s``.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fgrpo_core.config import ExperimentConfig
from fgrpo_io.runtime import CLIENT_STATE, ROUND_COMMITTED


def round_line(report: dict[str, Any]) -> str:
    """One committed round: macro and per-family accuracy, each owner's weight, the registry."""
    ev = report["evaluation"]
    fams = ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in sorted(ev["families"].items()))
    weights = ", ".join(
        f"{r['client_id']} {r['weight']:.2f}" + ("" if r.get("accepted", True) else " (rejected)")
        for r in report["rows"]
    )
    reg = report.get("registry") or {}
    alias = f" | v{reg['version']} -> {reg['alias']}" if reg else ""
    return (
        f"round {report['round']}: macro acc {ev['macro_accuracy']:.3f} ({fams}) | weights {weights}{alias}"
    )


class LiveView:
    """The run's progress display; thread-safe (owners train in parallel threads)."""

    def __init__(
        self, cfg: ExperimentConfig, console: Console | None = None, plain_interval_s: float = 2.0
    ) -> None:
        self.console = console or Console(highlight=False)
        self.interactive = self.console.is_terminal
        self.experiment, self.total_rounds = cfg.name, cfg.federation.rounds
        self.owners = [c.id for c in cfg.clients]
        self.round = 0
        self.states = dict.fromkeys(self.owners, "waiting")
        self.committed: set[int] = set()
        self._plain_interval_s = plain_interval_s
        self._last_plain: dict[str, float] = {}
        self._lock = threading.RLock()
        self._live: Live | None = None

    def __enter__(self) -> LiveView:
        if self.interactive:
            self._live = Live(self._table(), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # --- hooks (fgrpo_io/runtime.py) ---------------------------------------------------------------

    def progress(self, round_idx: int, client_id: str, step: int, total: int, reward: float) -> None:
        state = f"training step {step}/{total}, reward {reward:.3f}"
        if step >= total:
            state = f"trained {total}/{total} steps; evaluating, uploading"
        with self._lock:
            self._enter_round(round_idx)
            self.states[client_id] = state
            self._show(
                client_id, f"round {round_idx}/{self.total_rounds} | {client_id:<12} | {state}", step >= total
            )

    def event(self, kind: str, fields: dict[str, Any]) -> None:
        with self._lock:
            if kind == CLIENT_STATE:
                self._enter_round(int(fields["round"]))
                client_id, state = str(fields["client_id"]), str(fields["state"])
                self.states[client_id] = state
                self._show(
                    client_id,
                    f"round {fields['round']}/{self.total_rounds} | {client_id:<12} | {state}",
                    True,
                )
            elif kind == ROUND_COMMITTED:
                self.commit(fields["report"])

    def commit(self, report: dict[str, Any]) -> None:
        """Print the round's line (once) and each owner's outcome."""
        with self._lock:
            t = int(report["round"])
            if t in self.committed:
                return
            self.committed.add(t)
            self._enter_round(t)
            for row in report["rows"]:
                verdict = "uploaded, weight" if row.get("accepted", True) else "rejected, weight"
                reason = f" ({row['reason']})" if row.get("reason") else ""
                self.states[row["client_id"]] = f"{verdict} {row['weight']:.2f}{reason}"
            self.console.print(round_line(report), markup=False, soft_wrap=True)
            self._refresh()

    # --- drawing -----------------------------------------------------------------------------------

    def _enter_round(self, round_idx: int) -> None:
        if round_idx > self.round:
            self.round = round_idx
            self.states = dict.fromkeys(self.owners, "waiting")

    def _show(self, client_id: str, line: str, force: bool) -> None:
        if self.interactive:
            self._refresh()
            return
        now = time.monotonic()
        if force or now - self._last_plain.get(client_id, -1e9) >= self._plain_interval_s:
            self._last_plain[client_id] = now
            self.console.print(line, markup=False, soft_wrap=True)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._table())

    def title(self) -> str:
        if self.round == 0:
            return f"{self.experiment}: loading the base model, evaluating round 0"
        return f"{self.experiment}: round {self.round} of {self.total_rounds}"

    def _table(self) -> Group:
        # The title on its own line: a table's title wraps at the table's (narrow) width.
        table = Table(expand=False)
        table.add_column("owner")
        table.add_column("state", min_width=44)
        for owner in self.owners:
            table.add_row(owner, self.states[owner])
        return Group(Text(self.title(), style="bold"), table)
