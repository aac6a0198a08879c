"""The convergence benchmark in its CI form: every arm runs, the page and plots are written, numbers agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import convergence, merge_results, scenarios
from bench.results_page import verdict

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # Prepare
    out = tmp_path_factory.mktemp("bench")
    docs = out / "docs" / "results.md"
    argv = ["--quick", "--scenarios", "disjoint", "harmful", "--work-dir", str(out / "work")]
    argv += ["--results-dir", str(out / "results"), "--docs", str(docs)]
    # Execute
    assert convergence.main(argv) == 0
    data = json.loads((out / "results" / "convergence-tiny-quick.json").read_text())
    return {"data": data, "docs": docs}


def test_every_arm_of_every_scenario_ran_on_the_same_seed(quick: dict[str, Any]) -> None:
    # Assert
    data = quick["data"]
    got = {(r["scenario"], r["arm"], r["seed"]) for r in data["runs"]}
    want = {
        (s, arm.name, 1)
        for s in ("disjoint", "harmful")
        for arm in scenarios.arms_for(s, references=True, ablation=False)
    }
    assert got == want
    assert ("harmful", "fgrpo-probe", 1) in got
    # Same owners, same initial model and evaluation set across the arms of a scenario.
    for scenario in ("disjoint", "harmful"):
        initials = {
            json.dumps(r["initial"], sort_keys=True) for r in data["runs"] if r["scenario"] == scenario
        }
        assert len(initials) == 1


def test_rounds_macro_and_weights_are_consistent(quick: dict[str, Any]) -> None:
    # Assert: the macro average is the mean of the family accuracies; weights sum to 1 per round.
    for run in quick["data"]["runs"]:
        assert [r["round"] for r in run["rounds"]] == list(range(1, scenarios.BUDGETS["quick"].rounds + 1))
        for rnd in run["rounds"]:
            accs = [f["accuracy"] for f in rnd["families"].values()]
            assert rnd["macro_accuracy"] == pytest.approx(float(np.mean(accs)))
            if run["kind"] == "strategy":
                assert sum(row["weight"] for row in rnd["rows"]) == pytest.approx(1.0)
            else:
                assert rnd["rows"] == []


def test_hacking_owner_uses_the_hackable_reward_and_probe_replaces_its_stats(quick: dict[str, Any]) -> None:
    # Prepare
    cfgs = quick["data"]["configs"]
    runs = {(r["scenario"], r["arm"]): r for r in quick["data"]["runs"]}
    # Assert: the harmful owner's reward is hackable; with server_probe its r_post is the probe's.
    hacker = cfgs["harmful/fgrpo"]["clients"][0]
    assert hacker["reward"] == "contains_answer"
    probe_rows = [row for rnd in runs[("harmful", "fgrpo-probe")]["rounds"] for row in rnd["rows"]]
    assert any(row["r_post"] != row["reported_r_post"] for row in probe_rows)
    reported_rows = [row for rnd in runs[("harmful", "fgrpo")]["rounds"] for row in rnd["rows"]]
    assert all(row["r_post"] == row["reported_r_post"] for row in reported_rows)


def test_page_has_tables_goals_and_plots(quick: dict[str, Any]) -> None:
    # Assert
    page = quick["docs"].read_text()
    assert "## disjoint" in page and "## harmful" in page
    assert "FGRPO − FedAvg" in page and "FGRPO / centralised" in page and "server_probe" in page
    for name in ("convergence-tiny-quick-accuracy.png", "convergence-tiny-quick-fgrpo-gains-weights.png"):
        image = quick["docs"].parent / "img" / name
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"img/{name}" in page


def test_verdict_is_a_paired_comparison() -> None:
    # Prepare: reference values by hand.
    a, b = [0.5, 0.6, 0.7], [0.4, 0.5, 0.5]
    diff = np.array(a) - np.array(b)
    # Execute
    label, mean, sd = verdict(a, b)
    # Assert
    assert (label, mean, sd) == ("win", pytest.approx(diff.mean()), pytest.approx(diff.std(ddof=1)))
    assert verdict(b, a)[0] == "loss"
    assert verdict([0.5, 0.4], [0.45, 0.45])[0] == "tie"


def test_arms_filter_plans_only_the_named_arms_on_every_seed(tmp_path: Any) -> None:
    # Prepare
    budget = scenarios.BUDGETS["quick"]
    name = "fgrpo:tau=2"
    # Execute
    jobs = convergence.plan("tiny", budget, [1, 2], ["disjoint", "loud"], True, tmp_path, [name])
    everything = convergence.plan("tiny", budget, [1, 2], ["disjoint", "loud"], True, tmp_path)
    # Assert: the named arm's jobs, identical to the same jobs of the full plan
    assert {(j[0], j[1], j[3]) for j in jobs} == {
        (s, name, seed) for s in ("disjoint", "loud") for seed in (1, 2)
    }
    assert all(job in everything for job in jobs)
    assert jobs[0][4]["aggregation"]["tau"] == 2.0


def _only(data: dict[str, Any], scenario: str) -> dict[str, Any]:
    return {
        **data,
        "scenarios": [scenario],
        "runs": [r for r in data["runs"] if r["scenario"] == scenario],
        "configs": {k: v for k, v in data["configs"].items() if k.startswith(f"{scenario}/")},
    }


def test_a_later_scenario_merges_into_one_json_and_page(quick: dict[str, Any], tmp_path: Path) -> None:
    # Prepare: the quick run split as if its two scenarios had been run by two commands.
    data = quick["data"]
    first, later = tmp_path / "first.json", tmp_path / "later.json"
    first.write_text(json.dumps(_only(data, "disjoint")))
    later.write_text(json.dumps({**_only(data, "harmful"), "wall_time_s": 60.0}))
    page = tmp_path / "docs" / "results.md"
    # Execute
    argv = [str(later), str(first), "--flags", "--quick --scenarios harmful", "--note", "at commit abc"]
    code = merge_results.main([*argv, "--docs", str(page)])
    merged = json.loads(first.read_text())
    # Assert: every run once, scenarios in the benchmark's order, the later command on the page.
    assert code == 0
    assert sorted(map(merge_results._key, merged["runs"])) == sorted(map(merge_results._key, data["runs"]))
    assert merged["scenarios"] == ["disjoint", "harmful"] and merged["configs"] == data["configs"]
    text = page.read_text()
    assert "--quick --scenarios disjoint` in" in text
    assert "Added later: `--quick --scenarios harmful` (1.0 min; at commit abc)." in text
    assert "## disjoint" in text and "## harmful" in text


def test_merge_refuses_repeated_runs_and_other_settings(quick: dict[str, Any]) -> None:
    # Prepare
    data = quick["data"]
    disjoint, harmful = _only(data, "disjoint"), _only(data, "harmful")
    # Execute / Assert: nothing is overwritten; a different budget cannot share the table.
    with pytest.raises(merge_results.MergeError, match=r"already in the results .*'disjoint', 'fgrpo', 1"):
        merge_results.merge(disjoint, disjoint, "", "")
    other = {**harmful, "budget": {**harmful["budget"], "rounds": 9}}
    with pytest.raises(merge_results.MergeError, match="budget differs"):
        merge_results.merge(disjoint, other, "", "")
