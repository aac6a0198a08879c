"""bench/comm.py in quick mode: the files it writes, their structure and invariants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import comm
from bench.comm_accuracy import summarise


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("comm")
    assert comm.main(["--quick", "--clients", "2", "3", "--repetitions", "1", "--out", str(out)]) == 0
    return json.loads((out / "comm.json").read_text()), (out / "comm.md").read_text()


def test_quick_run_records_the_machine(quick: tuple[dict[str, Any], str]) -> None:
    # Prepare
    results, _ = quick
    # Assert
    meta = results["meta"]
    assert meta["quick"] is True
    assert meta["cpu_count"] >= 1
    assert meta["torch_threads"] >= 1
    assert len(meta["loadavg_start"]) == 3


def test_bytes_shrink_int8_below_bf16_below_fp32(quick: tuple[dict[str, Any], str]) -> None:
    # Prepare
    layouts = {row["layout"]: row for row in quick[0]["bytes"]["layouts"]}
    # Assert
    assert sorted(layouts) == ["smollm2-135m", "tiny"]
    for row in layouts.values():
        enc = row["encodings"]
        assert enc["int8"]["upload_bytes"] < enc["bfloat16"]["upload_bytes"] < enc["float32"]["upload_bytes"]
        assert enc["float32"]["upload_bytes"] > 4 * row["adapter_params"]
        assert 0.25 <= enc["int8"]["tensor_data_ratio_to_fp32"] < 0.26  # data + one scale per tensor
        assert enc["float32"]["per_owner_round_bytes"] == (
            enc["float32"]["upload_bytes"] + row["download_global_fp32_bytes"]
        )
    smol = layouts["smollm2-135m"]
    assert (smol["tensors"], smol["adapter_params"], smol["base_params"]) == (420, 2_442_240, 134_515_008)


def test_throughput_is_positive_and_within_the_error_bound(quick: tuple[dict[str, Any], str]) -> None:
    # Prepare
    throughput = quick[0]["throughput"]
    # Assert
    assert [row["clients"] for row in throughput["aggregate"]] == [2, 3]
    for row in throughput["aggregate"]:
        assert row["bytes_read"] == row["clients"] * throughput["delta_bytes"]
        for name in ("float64_loop", "float64_inplace", "aggregate_deltas"):
            assert row[name]["gbps"] > 0
        assert row["max_error_over_bound"] <= 1.0
    assert {"validate_delta", "decode_int8", "sha256_float32", "encode_int8"} <= set(throughput["stages"])
    assert all(stage["gbps"] > 0 for stage in throughput["stages"].values())


def test_headline_holds_the_issue_figures(quick: tuple[dict[str, Any], str]) -> None:
    # Prepare
    results, markdown = quick
    smol = next(r for r in results["bytes"]["layouts"] if r["layout"] == "smollm2-135m")["encodings"]["int8"]
    # Assert: the fixed names, each the figure of its section
    assert set(results["headline"]) == {
        "aggregation_bandwidth_fraction",
        "int8_bytes_over_fp32_up",
        "int8_bytes_over_fp32_down",
    }
    assert results["headline"]["int8_bytes_over_fp32_up"] == smol["ratio_to_fp32"]
    assert results["headline"]["int8_bytes_over_fp32_down"] == smol["download_ratio_to_fp32"] <= 0.26
    streamed = results["throughput"]["streamed"]
    assert results["headline"]["aggregation_bandwidth_fraction"] == min(
        r["streamed_over_copy"] for r in streamed["bandwidth"]
    )
    assert "Headline: `aggregation_bandwidth_fraction`" in markdown


def test_streamed_aggregation_holds_one_delta_whatever_k(quick: tuple[dict[str, Any], str]) -> None:
    # Prepare
    streamed = quick[0]["throughput"]["streamed"]
    delta_bytes = quick[0]["throughput"]["delta_bytes"]
    # Assert
    assert all(r["streamed_equals_per_tensor"] and r["gbps"]["copy"] > 0 for r in streamed["bandwidth"])
    for row in streamed["memory"]:
        assert row["now_peak_delta_bytes"] == delta_bytes
        assert row["before_peak_delta_bytes"] == row["clients"] * delta_bytes


def test_reconstruction_errors_follow_the_encodings_tolerances(quick: tuple[dict[str, Any], str]) -> None:
    # Prepare
    (errors,) = quick[0]["reconstruction"]["deltas"].values()
    # Assert
    assert errors["float32"]["max_abs_error"] == 0.0
    assert 0 < errors["bfloat16"]["relative_l2_error"] <= 2.0**-8
    assert 0 < errors["int8"]["max_abs_error_over_max_abs"] <= 1 / 254 * (1 + 1e-6)


def test_markdown_has_every_section(quick: tuple[dict[str, Any], str]) -> None:
    # Prepare
    results, markdown = quick
    # Assert
    assert results["accuracy"] == {"skipped": "no seeds (quick mode)"}
    for title in (
        "Bytes per owner per round",
        "int8 and accuracy",
        "Reconstruction",
        "Aggregation throughput",
        "Streamed aggregation against the copy bandwidth",
    ):
        assert f"## {title}" in markdown


def test_summarise_reports_differences_to_float32_in_points() -> None:
    # Prepare: two seeds, int8 one prompt (1/96) below float32 on seed 1
    rows = [
        {
            "seed": s,
            "encoding": e,
            "initial_macro_accuracy": 0.25,
            "final_macro_accuracy": acc,
            "final_macro_mean_reward": 0.0,
        }
        for s, accs in [(0, (0.50, 0.50, 0.50)), (1, (0.50, 0.50, 0.50 - 1 / 96))]
        for e, acc in zip(("float32", "bfloat16", "int8"), accs, strict=True)
    ]
    # Execute
    summary = summarise(rows, step_points=100 / 96, goal_points=1.0)
    # Assert
    int8 = summary["encodings"]["int8"]
    assert int8["minus_float32_points_per_seed"] == pytest.approx([0.0, -100 / 96])
    assert int8["minus_float32_points_mean"] == pytest.approx(-50 / 96)
    assert summary["goal"]["met"] is True
    assert summary["encodings"]["bfloat16"]["minus_float32_points_mean"] == 0.0
    assert summary["encodings"]["float32"]["mean_change_from_initial_points"] == pytest.approx(25.0)


def test_options_default_to_the_tiny_config_and_the_results_folder() -> None:
    # Execute
    opts = comm.Options()
    # Assert
    assert opts.config == Path(comm.ROOT) / "configs" / "tiny.yaml"
    assert opts.out_dir == Path(comm.ROOT) / "bench" / "results"
    assert opts.config.is_file()
