"""Markdown tables of bench/comm.py's results (the JSON holds the same numbers, unrounded)."""

from __future__ import annotations

from typing import Any


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.3f} MB"


def _machine(meta: dict[str, Any]) -> list[str]:
    load = ", ".join(f"{x:.1f}" for x in meta["loadavg_start"])
    load_end = ", ".join(f"{x:.1f}" for x in meta["loadavg_end"])
    return [
        f"Measured {meta['created']} with `{meta['command']}`"
        + (" (quick mode: smaller and fewer measurements)." if meta["quick"] else "."),
        f"Machine: {meta['cpu_count']} cores ({meta['cpus_usable']} usable), torch {meta['torch']} "
        f"with {meta['torch_threads']} threads, Python {meta['python']}; load average at start "
        f"{load}, at end {load_end} (other work shares this machine: timings vary between runs). "
        f"Total {meta['wall_s']:.0f} s.",
        "",
    ]


def _bytes(section: dict[str, Any]) -> list[str]:
    rows = []
    for layout in section["layouts"]:
        for enc, e in layout["encodings"].items():
            rows.append(
                [
                    f"{layout['layout']} ({layout['tensors']} tensors, {layout['adapter_params']:,} params)",
                    enc,
                    _mb(e["upload_bytes"]),
                    f"{e['ratio_to_fp32']:.4f}",
                    f"{e['header_bytes']:,} B",
                    f"{e['tensor_data_ratio_to_fp32']:.4f}",
                    f"{e['ratio_to_base_fp32']:.5f} of {_mb(layout['base_fp32_bytes'])}",
                    _mb(layout["download_global_fp32_bytes"]),
                    f"{_mb(e['download_bytes'])} ({e['download_ratio_to_fp32']:.4f})",
                    _mb(e["per_owner_round_bytes"]),
                ]
            )
    goal = section["goal"]
    head = ["adapter", "delta encoding", "upload", "x fp32", "of which header", "tensor data x fp32"]
    head += ["upload / base model fp32"]
    lines = ["## Bytes per owner per round", ""]
    head += ["download before (theta_t, fp32)", "download now (x fp32)", "per owner per round now"]
    lines += _table(head, rows)
    lines += [
        f"Goal int8 <= {goal['int8_max_ratio_to_fp32']} x fp32 both ways ({goal['layout']}): "
        f"**{'met' if goal['met'] else 'NOT met'}**. Download now: with bfloat16 or int8 an owner "
        "holding theta_(t-1) downloads the step to theta_t in that encoding "
        "(fgrpo_core/downlink.py; theta_t is defined as its decoded value); float32 downloads "
        "theta_t itself, as before for every encoding. The tensor data alone is 0.25 x fp32 plus "
        "one float32 scale per tensor; the rest is the safetensors header (every key name, and "
        "for int8 a second entry per tensor for its scale), which does not shrink with the values, "
        "so the small tiny layout stays above 0.26.",
        "",
        "Layouts: " + "; ".join(f"{x['layout']}: {x['how']}" for x in section["layouts"]) + ".",
        "",
    ]
    return lines


def _accuracy(section: dict[str, Any]) -> list[str]:
    lines = ["## int8 and accuracy", ""]
    if "skipped" in section:
        return [*lines, f"Skipped: {section['skipped']}.", ""]
    s = section["summary"]
    rows = []
    for seed in section["seeds"]:
        by = {r["encoding"]: r for r in section["runs"] if r["seed"] == seed}
        rows.append(
            [
                str(seed),
                f"{100 * by['float32']['initial_macro_accuracy']:.2f}",
                *(f"{100 * by[e]['final_macro_accuracy']:.2f}" for e in ("float32", "bfloat16", "int8")),
                *(
                    f"{100 * (by[e]['final_macro_accuracy'] - by['float32']['final_macro_accuracy']):+.2f}"
                    for e in ("bfloat16", "int8")
                ),
                *(
                    f"{by[e]['final_adapter_distance_to_float32_over_float32_movement']:.2e}"
                    for e in ("bfloat16", "int8")
                ),
            ]
        )
    means = [
        f"{100 * s['encodings'][e]['mean_final_macro_accuracy']:.2f}" for e in ("float32", "bfloat16", "int8")
    ]
    diffs = [f"{s['encodings'][e]['minus_float32_points_mean']:+.2f}" for e in ("bfloat16", "int8")]
    rows.append(["mean", "", *means, *diffs, "", ""])
    header = ["seed", "initial", "final fp32", "final bf16", "final int8", "bf16 - fp32", "int8 - fp32"]
    header += ["bf16 adapter gap", "int8 adapter gap"]
    lines += _table(header, rows)
    goal = s["goal"]
    lines += [
        f"Macro accuracy in points, `{section['config']}`, delta encoding = federation.delta_dtype, "
        "used both ways (owners' deltas up, the global step down: fgrpo_core/downlink.py), "
        f"same seeds. One evaluation prompt is {s['accuracy_step_points']:.2f} points of macro "
        "accuracy. Adapter gap: ||final adapter - float32 run's final adapter|| / ||float32 run's "
        "final adapter - initial adapter||.",
        "Training moved macro accuracy by "
        f"{s['encodings']['float32']['mean_change_from_initial_points']:+.2f} points (float32, mean over "
        "seeds): where that is small, equal accuracies are weak evidence and the adapter gap is the "
        "finer measure of what an encoding changed.",
        f"Goal int8 within {goal['int8_within_points_of_float32']} point of fp32 (mean over seeds): "
        f"**{'met' if goal['met'] else 'NOT met'}**.",
        "",
    ]
    return lines


def _reconstruction(section: dict[str, Any]) -> list[str]:
    rows = [
        [
            client,
            enc,
            f"{e['max_abs_error']:.3e}",
            f"{e['max_abs_error_over_max_abs']:.3e}",
            f"{e['relative_l2_error']:.3e}",
        ]
        for client, per_enc in section["deltas"].items()
        for enc, e in per_enc.items()
    ]
    lines = ["## Reconstruction error of a delta", ""]
    lines += _table(
        ["delta", "encoding", "max abs error", "max abs error / max abs", "relative L2 error"], rows
    )
    return [*lines, f"Deltas: {section['source']}.", ""]


def _throughput(section: dict[str, Any]) -> list[str]:
    rows = [
        [
            str(r["clients"]),
            _mb(r["bytes_read"]),
            *(
                f"{r[name]['gbps']:.2f} ({r[name]['median_ms']:.1f} ms)"
                for name in ("float64_loop", "float64_inplace", "aggregate_deltas")
            ),
            f"{r['speedup_vs_float64_loop']:.2f}x",
            f"{r['max_abs_error_vs_float64']:.1e}",
            f"{r['max_error_over_bound']:.3f}",
        ]
        for r in section["aggregate"]
    ]
    header = [
        "K",
        "deltas read",
        "before: float64 loop GB/s",
        "float64 in place GB/s",
        "aggregate_deltas (per tensor) GB/s",
    ]
    lines = ["## Aggregation throughput", ""]
    lines += _table([*header, "speedup", "max error vs float64", "error / bound"], rows)
    goal = section["goal"]
    lines += [
        f"Adapter: {section['layout']}, fp32 deltas of {_mb(section['delta_bytes'])}; median of "
        f"{section['repetitions']} interleaved repetitions. Goal >= {goal['min_gbps']} GB/s for every K: "
        f"**{'met' if goal['met'] else 'NOT met'}**. Error bound: accumulation_error_factor(K) x "
        "(|theta| + eta sum w|delta|) (fgrpo_core/aggregation.py).",
        "",
        "### Per-delta stages on the coordinator (and the client's encode)",
        "",
    ]
    stage_rows = [
        [
            name,
            f"{s['median_ms']:.1f}",
            f"{s['gbps']:.2f}",
            f"{s['encoded_gbps']:.2f}" if "encoded_gbps" in s else "",
        ]
        for name, s in section["stages"].items()
    ]
    lines += _table(["stage", "median ms", "GB/s of fp32 delta", "GB/s of encoded bytes"], stage_rows)
    return lines


def _streamed(section: dict[str, Any]) -> list[str]:
    rows = [
        [
            str(r["clients"]),
            _mb(r["bytes_read"]),
            f"{r['gbps']['copy']:.2f}",
            f"{r['gbps']['per_tensor']:.2f} ({r['per_tensor_over_copy']:.2f})",
            f"{r['gbps']['streamed']:.2f} ({r['streamed_over_copy']:.2f})",
            "yes" if r["streamed_equals_per_tensor"] else "NO",
        ]
        for r in section["bandwidth"]
    ]
    lines = ["## Streamed aggregation against the copy bandwidth", ""]
    header = ["K", "deltas read", "copy GB/s", "before: per tensor GB/s (x copy)"]
    lines += _table([*header, "now: streamed GB/s (x copy)", "same bits"], rows)
    goal = section["goal"]
    lines += [
        f"Copy: one torch copy of a buffer of the K deltas' size, timed interleaved with both sums. "
        f"Goal streamed >= {goal['min_fraction_of_copy']} x copy for every K: "
        f"**{'met' if goal['met'] else 'NOT met'}** (lowest {goal['fraction']:.2f}).",
        "",
        "### Coordinator memory in K",
        "",
    ]
    mem = [
        [
            str(r["clients"]),
            _mb(r["before_peak_delta_bytes"]),
            _mb(r["before_total_bytes"]),
            _mb(r["now_peak_delta_bytes"]),
            _mb(r["now_total_bytes"]),
        ]
        for r in section["memory"]
    ]
    head = ["K", "before: deltas held", "before: + accumulator", "now: deltas held"]
    lines += _table([*head, "now: + accumulator"], mem)
    lines += [
        "Decoded delta bytes alive at once, counted as each is freed (not RSS). Before: the aggregate "
        "task decoded every delta into a dict, then summed; now each is read, added and dropped.",
        "",
    ]
    return lines


def render(results: dict[str, Any]) -> str:
    """The whole report."""
    figures = ", ".join(f"`{k}` {v:.4f}" for k, v in results["headline"].items())
    lines = ["# Communication benchmark (bench/comm.py)", "", *_machine(results["meta"])]
    lines += [f"Headline: {figures}.", ""]
    lines += _bytes(results["bytes"])
    lines += _accuracy(results["accuracy"])
    lines += _reconstruction(results["reconstruction"])
    lines += _throughput(results["throughput"])
    lines += _streamed(results["throughput"]["streamed"])
    return "\n".join(lines).rstrip() + "\n"
