"""Communication benchmark: bytes per owner per round, what int8 costs, coordinator throughput.

    .venv/bin/python bench/comm.py            # the full run (~10 min on 2 cores), writes
                                              # bench/results/comm.json and comm.md
    .venv/bin/python bench/comm.py --quick    # seconds: smaller measurements, no federated runs

1. Bytes: each delta encoding (fgrpo_core.deltas.encode) of the tiny model's adapter and of
   SmolLM2-135M-Instruct's r8 all-linear adapter, against the base model (bench/comm_layouts.py).
2. Accuracy: the tiny federated experiment once per seed and encoding, and the reconstruction
   error of real deltas (bench/comm_accuracy.py).
3. Throughput: aggregate_deltas for K clients at SmolLM2's adapter size, before/after, and the
   per-delta stages: sha256, decode, validate_delta, delta_norm (bench/comm_throughput.py); the
   streamed aggregation against this machine's copy bandwidth, and the coordinator's memory in
   K (bench/comm_stream.py).

The JSON's ``headline`` holds aggregation_bandwidth_fraction, int8_bytes_over_fp32_up and
int8_bytes_over_fp32_down.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script, bench/ is on the path instead of the repository
from fgrpo_io.environment import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402

from bench import comm_accuracy, comm_layouts, comm_report, comm_stream, comm_throughput  # noqa: E402
from bench.comm_layouts import AdapterLayout  # noqa: E402
from fgrpo_core.config import ExperimentConfig, load_config  # noqa: E402
from fgrpo_core.models import ModelBundle, get_adapter  # noqa: E402

INT8_MAX_RATIO = 0.26  # issue 15: int8 both ways <= 0.26 x fp32
BANDWIDTH_GOAL_FRACTION = 0.5  # streamed aggregation >= half the copy bandwidth
ACCURACY_GOAL_POINTS = 1.0
THROUGHPUT_GOAL_GBPS = 1.0


@dataclass
class Options:
    """What to measure and where to write it."""

    config: Path = ROOT / "configs" / "tiny.yaml"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    clients: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32])
    memory_clients: list[int] = field(default_factory=lambda: [2, 8, 16])
    repetitions: int = 9
    quick: bool = False
    out_dir: Path = ROOT / "bench" / "results"


def quick_options(out_dir: Path) -> Options:
    """Seconds instead of minutes: no federated runs, synthetic deltas, K in (2, 4), 3 repetitions."""
    return Options(
        seeds=[], clients=[2, 4], memory_clients=[2, 4], repetitions=3, quick=True, out_dir=out_dir
    )


def machine_info(command: str, quick: bool) -> dict[str, Any]:
    return {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "quick": quick,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "loadavg_start": list(os.getloadavg()),
    }


def _tiny(cfg: ExperimentConfig, quick: bool, scratch: Path) -> tuple[AdapterLayout, ModelBundle]:
    """The tiny layout; quick mode skips the warm-up (same keys and shapes) in a scratch cache."""
    if quick:
        cfg = comm_layouts.with_changes(
            cfg, {"model": {"tiny_warmup_steps": 0, "cache_dir": str(scratch / "models")}}
        )
    return comm_layouts.tiny_layout(cfg)


def measure_bytes(
    cfg: ExperimentConfig, opts: Options, scratch: Path
) -> tuple[dict[str, Any], tuple[AdapterLayout, AdapterLayout, ModelBundle]]:
    tiny, bundle = _tiny(cfg, opts.quick, scratch)
    smol, _ = comm_layouts.smollm2_layout(cfg.lora, check_gguf=not opts.quick)
    rows = [
        comm_layouts.bytes_row(
            tiny, comm_layouts.synthetic_delta(tiny, 0), comm_layouts.global_adapter_for(tiny, bundle)
        ),
        comm_layouts.bytes_row(
            smol, comm_layouts.synthetic_delta(smol, 0), comm_layouts.global_adapter_for(smol, None)
        ),
    ]
    smol_int8 = rows[1]["encodings"]["int8"]
    met = max(smol_int8["ratio_to_fp32"], smol_int8["download_ratio_to_fp32"]) <= INT8_MAX_RATIO
    goal = {"int8_max_ratio_to_fp32": INT8_MAX_RATIO, "layout": rows[1]["layout"], "met": met}
    section = {"layouts": rows, "goal": goal}
    return section, (tiny, smol, bundle)


def measure_accuracy(
    cfg: ExperimentConfig, opts: Options, bundle: ModelBundle, tiny: AdapterLayout, scratch: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    initial = get_adapter(bundle.model)
    if opts.quick:
        deltas = {"synthetic": comm_layouts.synthetic_delta(tiny, 3)}
        source = "synthetic normal values (quick mode)"
    else:
        deltas = comm_accuracy.real_deltas(bundle, initial, cfg, scratch)
        source = f"each client's round-1 delta from the initial adapter, {opts.config.name}"
    reconstruction = {
        "source": source,
        "deltas": {cid: comm_accuracy.reconstruction_error(d) for cid, d in deltas.items()},
    }
    if not opts.seeds:
        return {"skipped": "no seeds (quick mode)"}, reconstruction
    rows = comm_accuracy.federated_runs(cfg, opts.seeds, initial)
    step = comm_accuracy.accuracy_step_points(cfg)
    accuracy = {
        "config": str(opts.config.relative_to(ROOT) if opts.config.is_relative_to(ROOT) else opts.config),
        "seeds": opts.seeds,
        "runs": rows,
        "summary": comm_accuracy.summarise(rows, step, ACCURACY_GOAL_POINTS),
    }
    return accuracy, reconstruction


def measure_throughput(smol: AdapterLayout, opts: Options) -> dict[str, Any]:
    aggregate = comm_throughput.aggregation_throughput(smol, opts.clients, opts.repetitions)
    stages = comm_throughput.stage_throughput(smol, opts.repetitions)
    met = all(r["aggregate_deltas"]["gbps"] >= THROUGHPUT_GOAL_GBPS for r in aggregate)
    bandwidth = comm_stream.bandwidth(smol, opts.clients, opts.repetitions, comm_throughput.time_interleaved)
    fraction = min(r["streamed_over_copy"] for r in bandwidth)
    return {
        "streamed": {
            "bandwidth": bandwidth,
            "memory": comm_stream.memory(smol, opts.memory_clients),
            "goal": {
                "min_fraction_of_copy": BANDWIDTH_GOAL_FRACTION,
                "fraction": fraction,
                "met": fraction >= BANDWIDTH_GOAL_FRACTION,
            },
        },
        "layout": smol.name,
        "delta_bytes": 4 * smol.params,
        "repetitions": opts.repetitions,
        "aggregate": aggregate,
        "stages": stages,
        "goal": {"min_gbps": THROUGHPUT_GOAL_GBPS, "met": met},
    }


def headline(bytes_section: dict[str, Any], throughput: dict[str, Any]) -> dict[str, float]:
    """The figures issue 15 tracks, under their fixed names (int8 ratios: SmolLM2's layout)."""
    smol = next(r for r in bytes_section["layouts"] if r["layout"] == bytes_section["goal"]["layout"])
    return {
        "aggregation_bandwidth_fraction": throughput["streamed"]["goal"]["fraction"],
        "int8_bytes_over_fp32_up": smol["encodings"]["int8"]["ratio_to_fp32"],
        "int8_bytes_over_fp32_down": smol["encodings"]["int8"]["download_ratio_to_fp32"],
    }


def run(opts: Options, command: str = "bench/comm.py") -> dict[str, Any]:
    """Every measurement, as one JSON-serialisable dict."""
    started = time.perf_counter()
    meta = machine_info(command, opts.quick)
    cfg = load_config(opts.config)
    with tempfile.TemporaryDirectory(prefix="fgrpo-bench-comm-") as tmp:
        scratch = Path(tmp)
        print("bytes per owner per round ...", file=sys.stderr, flush=True)
        bytes_section, (tiny, smol, bundle) = measure_bytes(cfg, opts, scratch)
        print("throughput ...", file=sys.stderr, flush=True)
        throughput = measure_throughput(smol, opts)
        print("accuracy and reconstruction ...", file=sys.stderr, flush=True)
        accuracy, reconstruction = measure_accuracy(cfg, opts, bundle, tiny, scratch)
    meta["loadavg_end"] = list(os.getloadavg())
    meta["wall_s"] = time.perf_counter() - started
    return {
        "headline": headline(bytes_section, throughput),
        "meta": meta,
        "bytes": bytes_section,
        "accuracy": accuracy,
        "reconstruction": reconstruction,
        "throughput": throughput,
    }


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "comm.json", out_dir / "comm.md"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    md_path.write_text(comm_report.render(results))
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="seconds: no federated runs, K in 2 4, 3 repetitions"
    )
    parser.add_argument("--config", type=Path, default=Options.config, help="federated experiment config")
    parser.add_argument("--seeds", type=int, nargs="*", help="seeds of the federated runs (default 0 1 2)")
    parser.add_argument("--clients", type=int, nargs="+", help="K values of the aggregation benchmark")
    parser.add_argument("--memory-clients", type=int, nargs="+", help="K values of the memory count")
    parser.add_argument("--repetitions", type=int, help="timed repetitions per measurement (median)")
    parser.add_argument("--out", type=Path, default=Options.out_dir, help="folder for comm.json and comm.md")
    args = parser.parse_args(argv)
    opts = quick_options(args.out) if args.quick else Options(out_dir=args.out)
    opts.config = args.config.resolve()
    if args.seeds is not None:
        opts.seeds = args.seeds
    if args.clients:
        opts.clients = args.clients
    if args.memory_clients:
        opts.memory_clients = args.memory_clients
    if args.repetitions:
        opts.repetitions = args.repetitions
    command = " ".join(["bench/comm.py", *(argv if argv is not None else sys.argv[1:])])
    json_path, md_path = write(run(opts, command), opts.out_dir)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
