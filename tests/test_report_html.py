"""`fgrpo report`: the HTML report of an experiment, built from hand-written round reports."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fgrpo_app.cli import app
from fgrpo_app.report_html import ExperimentData, RegistryInfo, read_store, render
from fgrpo_io.store import LocalStore, put_json

PREFIX, EXPERIMENT = "fgrpo", "exp-a"


def _row(
    client: str, r_pre: float, r_post: float, gain: float, weight: float, **extra: Any
) -> dict[str, Any]:
    row = {
        "client_id": client,
        "accepted": True,
        "reason": "",
        "n_k": 16,
        "r_pre": r_pre,
        "r_post": r_post,
        "baseline": r_pre,
        "scale": 0.05,
        "gain": gain,
        "weight": weight,
        "delta_norm": 0.5,
        "delta_bytes": 285616,
    }
    return {**row, **extra}


def _report(t: int, rows: list[dict[str, Any]], macro: float) -> dict[str, Any]:
    families = {"add1": {"accuracy": macro + 0.1, "mean_reward": 0.5, "n": 32}}
    families["mul1"] = {"accuracy": macro - 0.1, "mean_reward": 6.0, "n": 32}
    return {
        "round": t,
        "rows": rows,
        "evaluation": {"families": families, "macro_accuracy": macro},
        "registry": {"version": str(t), "alias": "champion" if t == 1 else "challenger"},
        "timings": {"train_s": 2.5, "aggregate_s": 0.1, "store_io_s": 0.05},
    }


@pytest.fixture
def store_with_reports(tmp_path: Path) -> dict[str, Any]:
    """Two rounds of an experiment in a local store; owner-b's round-2 delta was rejected."""
    store = LocalStore(tmp_path / "store")
    reports = [
        _report(1, [_row("owner-a", 0.25, 0.375, 1.5, 0.6), _row("owner-b", 7.5, 7.25, -0.0, 0.4)], 0.3),
        _report(
            2,
            [
                _row("owner-a", 0.375, 0.5, 0.75, 1.0),
                _row("owner-b", 7.25, 9.5, 0.0, 0.0, accepted=False, reason="norm: 9.1 > 5 x median"),
            ],
            0.35,
        ),
    ]
    for report in reports:
        put_json(store, f"{PREFIX}/{EXPERIMENT}/global/round-{report['round']:04d}/result.json", report)
    state = {"round": 2, "clients": {"owner-a": {"baseline": 0.41, "scale": 0.06, "rounds_seen": 2}}}
    put_json(store, f"{PREFIX}/{EXPERIMENT}/state/round-0002.json", state)
    return {"store": store, "root": tmp_path / "store", "reports": reports, "out": tmp_path / "r.html"}


def _expected_row(t: int, row: dict[str, Any]) -> str:
    """The reference rendering of one round-table row, cell by cell."""
    cells = [str(t), row["client_id"], "yes" if row["accepted"] else "<b>no</b>", str(row["n_k"])]
    cells += [f"{row[k] + 0.0:.4g}" for k in ("r_pre", "r_post", "baseline", "scale", "gain", "weight")]
    cells += [f"{row['delta_norm']:.4g}", str(row["delta_bytes"]), html.escape(row["reason"])]
    tds = "".join(f'<td class="text">{c}</td>' if i < 2 else f"<td>{c}</td>" for i, c in enumerate(cells))
    opening = "<tr>" if row["accepted"] else '<tr class="rejected">'
    return f"{opening}{tds}</tr>"


def test_cli_report_holds_every_row_the_plots_and_the_state(
    store_with_reports: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root, out = store_with_reports["root"], store_with_reports["out"]
    # Execute
    result = CliRunner().invoke(
        app, ["report", EXPERIMENT, "--store-root", str(root), "--prefix", PREFIX, "--out", str(out)]
    )
    # Assert: every client row of every round, as the reference renders it.
    assert result.exit_code == 0, result.output + repr(result.exception)
    page = out.read_text()
    for report in store_with_reports["reports"]:
        for row in report["rows"]:
            assert _expected_row(report["round"], row) in page
    # Two embedded PNGs, each a real PNG.
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(img).startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    # The evaluation per round, the server state, the per-round timings; no MLflow.
    assert "<td>0.35</td>" in page and "<td>challenger</td>" in page
    assert '<td class="text">owner-a</td><td>0.41</td><td>0.06</td><td>2</td>' in page
    assert "<th>train</th>" in page and "<td>2.5</td>" in page
    assert "No MLflow tracking URI given" in page
    assert "norm: 9.1 &gt; 5 x median" in page  # text is escaped
    assert "<b>-0</b>" not in page and "<td>-0</td>" not in page


def test_registry_versions_and_aliases_are_shown(store_with_reports: dict[str, Any]) -> None:
    # Prepare
    data = read_store(store_with_reports["store"], PREFIX, EXPERIMENT)
    versions = [
        {"version": "1", "round": "1", "score": "0.3000", "aliases": "champion", "run_id": "run-1"},
        {"version": "2", "round": "2", "score": "0.3500", "aliases": "challenger", "run_id": "run-2"},
    ]
    data.registry = RegistryInfo("fgrpo-exp-a", versions, {"champion": "1", "challenger": "2"})
    data.config, data.config_source = {"grpo.learning_rate": "0.001"}, "test"
    # Execute
    page = render(data)
    # Assert
    assert "aliases: challenger → v2, champion → v1 (held now)" in page
    assert '<td class="text">2</td><td>2</td><td>0.3500</td><td>challenger</td><td>run-2</td>' in page
    assert '<td class="text">grpo.learning_rate</td><td class="text">0.001</td>' in page


def test_read_store_sorts_rounds_and_reads_the_last_state(store_with_reports: dict[str, Any]) -> None:
    # Execute
    data: ExperimentData = read_store(store_with_reports["store"], PREFIX, EXPERIMENT)
    # Assert
    assert [r["round"] for r in data.rounds] == [1, 2]
    assert data.state is not None and data.state["round"] == 2


def test_unknown_experiment_is_an_error_naming_the_store(tmp_path: Path) -> None:
    # Execute
    result = CliRunner().invoke(app, ["report", "nope", "--store-root", str(tmp_path)])
    # Assert
    assert result.exit_code == 1
    assert "no round results of experiment 'nope'" in result.output


def test_report_needs_a_store(tmp_path: Path) -> None:
    # Execute
    result = CliRunner().invoke(app, ["report", EXPERIMENT])
    # Assert
    assert result.exit_code == 2
    assert "fgrpo report CONFIG), or --store-root DIR" in result.output
