"""The HTML report in a real browser: Debian's chromium, headless, driven by playwright.

.ci/run installs chromium (apt-get); playwright is a dev dependency. Every image must decode and
every section's table must be present, as a reader would see them.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fgrpo_app.cli import app
from fgrpo_io.store import LocalStore, put_json
from tests.test_report_html import _report, _row

CHROMIUM = "/usr/bin/chromium"


def _store(root: Path) -> None:
    """Round 0 (the initial evaluation, no clients) and two federated rounds."""
    store = LocalStore(root)
    initial = {**_report(0, [], 0.25), "registry": None}
    rounds = [
        initial,
        _report(1, [_row("bank", 0.25, 0.375, 1.5, 0.5), _row("lab", 7.5, 7.25, 0.0, 0.5)], 0.3),
        _report(2, [_row("bank", 0.375, 0.5, 0.75, 0.5), _row("lab", 7.25, 9.5, 0.0, 0.5)], 0.35),
    ]
    for report in rounds:
        t = report["round"]
        if t == 0:  # theta_0's evaluation alone, as the experiment flow stores it
            put_json(store, "fgrpo/exp-b/global/round-0000/evaluation.json", report["evaluation"])
        else:
            put_json(store, f"fgrpo/exp-b/global/round-{t:04d}/result.json", report)
    put_json(store, "fgrpo/exp-b/state/round-0002.json", {"round": 2, "clients": {}})


def test_every_image_loads_and_every_table_is_there(tmp_path: Path) -> None:
    # Prepare
    from playwright.sync_api import sync_playwright

    _store(tmp_path / "store")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["report", "exp-b", "--store-root", str(tmp_path / "store"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    # Execute
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(out.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth, e.naturalHeight])"
            )
            headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
            tables = page.eval_on_selector_all("table", "els => els.map(e => e.rows.length)")
            header = page.text_content("p.muted")
        finally:
            browser.close()
    # Assert: both plots decoded to real pixels.
    assert [alt for alt, *_ in images] == [
        "global accuracy per family and macro, per round",
        "FGRPO gain and weight per client, per round",
    ]
    assert all(complete and width > 300 and height > 100 for _, complete, width, height in images)
    # Every section; the evaluation table has rounds 0-2, the round table 2 owners x 2 rounds.
    for section in ("Global evaluation", "Clients: gains and weights", "Round table", "Model registry"):
        assert section in headings
    assert tables[0] == 1 + 3 and tables[1] == 1 + 4
    assert header is not None and "2 federated round(s) after the initial evaluation (round 0)" in header
